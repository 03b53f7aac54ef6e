package firecracker

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/firecracker-microvm/firecracker-go-sdk/client/operations"

	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/testutil/nstest"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
	"github.com/firegopher/firegopher/internal/vmm/vmmtest"
)

// realJailerEnv names a real jailer binary (from a release tarball) to run the jailed tests
// with, against the fake firecracker of its release: it needs root, not KVM.
const realJailerEnv = "FIREGOPHER_TEST_JAILER"

// jailBase is a short base directory (socket paths in the chroot must fit in sun_path) on
// the file system of t.TempDir, so that the VM's disk can be linked into the chroot.
func jailBase(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the jailer chroots, setuids and mknods")
	}
	d, err := os.MkdirTemp("", "fcj")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// jailedBackend is the backend of rel under the test jailer (or the real one of the same
// release, see realJailerEnv), with owners from a range of the test's own.
func jailedBackend(t *testing.T, rel fctest.Release, jailer string) (*Backend, *Jailer) {
	t.Helper()
	base := jailBase(t)
	if jailer == "" {
		jailer = rel.Jailer
		if real := os.Getenv(realJailerEnv); real != "" {
			v, err := ReadVersion(context.Background(), real, "Jailer")
			if err != nil {
				t.Fatal(err)
			}
			if v.String() != rel.Version {
				t.Skipf("%s is v%s: no test of v%s", realJailerEnv, v, rel.Version)
			}
			jailer = real
		}
	}
	// Well inside the default range's neighbourhood but away from it: tests running at the
	// same time on this machine do not share uids.
	first := 1_950_000_000 + rand.IntN(1_000_000)*100
	owners, err := jail.OpenAllocator(filepath.Join(base, "owners.db"), jail.Range{First: first, Count: 100})
	if err != nil {
		t.Fatal(err)
	}
	jr := &Jailer{Binary: jailer, Base: base, Owners: owners, Cgroups: CgroupNoLimits}
	return &Backend{Binary: rel.Firecracker, Jailer: jr}, jr
}

// rootfsTar is a root disk the fake guest can "mount" in an empty jail: a tar of a static
// busybox as /bin/sh and /bin/sleep.
func rootfsTar(t *testing.T, path string) {
	t.Helper()
	bb, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		bb, err = os.ReadFile("/bin/busybox")
	}
	if err != nil {
		t.Skip("no busybox to give the jailed guest a shell")
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	for _, applet := range []string{"sh", "sleep", "echo", "cat"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox"})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConformanceJailed(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		b, _ := jailedBackend(t, rel, "")
		h := harness(rel)
		h.Backend = b
		spec := h.Spec
		h.Spec = func(t *testing.T, dir string, cfg vmconfig.Config) vmm.Spec {
			s := spec(t, dir, cfg)
			rootfsTar(t, s.Disks[0].Path)
			return s
		}
		vmmtest.Run(t, h)
	})
}

func status(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func statT(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// TestJailedLayout checks the jail from outside while the VM runs, and that nothing of it
// is left after.
func TestJailedLayout(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		b, jr := jailedBackend(t, rel, "")
		spec := testSpec(t, "")
		// A foreign guest: it runs until Ctrl-Alt-Del. Its root disk is the VM's own clone.
		spec.Disks[0].ReadOnly = false
		spec.ID = "vm-" + strconv.Itoa(rand.IntN(1e6))
		inst, err := b.Start(startCtx(t), spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { inst.Kill(); inst.Wait() })
		waitConsole(t, spec, "foreign init is running")

		al, ok, err := jr.Owners.Lookup(spec.ID)
		if err != nil || !ok || al.Owner.UID < jr.Owners.Range().First {
			t.Fatalf("owner: %+v %v %v", al, ok, err)
		}
		owner := al.Owner
		root := filepath.Join(jr.Base, "firecracker", spec.ID, "root")
		st := status(t, inst.Pid())
		if f := strings.Fields(st["Uid"]); len(f) == 0 || f[0] != strconv.Itoa(owner.UID) {
			t.Errorf("Firecracker runs as %s, want uid %d", st["Uid"], owner.UID)
		}
		if f := strings.Fields(st["NSpid"]); len(f) != 2 || f[1] != "1" {
			t.Errorf("NSpid %q: want pid 1 of a PID namespace of its own", st["NSpid"])
		}
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/root", inst.Pid())); err != nil || got != root {
			t.Errorf("root %q %v, want %s", got, err, root)
		}
		if k := statT(t, filepath.Join(root, "vmlinux")); k.Ino != statT(t, spec.Kernel).Ino || k.Uid != 0 {
			t.Errorf("the kernel is linked, never chowned: ino %d uid %d", k.Ino, k.Uid)
		}
		d := statT(t, filepath.Join(root, "rootfs"))
		if d.Ino != statT(t, spec.Disks[0].Path).Ino || int(d.Uid) != owner.UID || d.Mode&0o777 != 0o600 {
			t.Errorf("the VM's disk: ino %d uid %d mode %o, want a link owned by %d, 0600", d.Ino, d.Uid, d.Mode&0o777, owner.UID)
		}
		exe := statT(t, filepath.Join(root, "firecracker"))
		if exe.Nlink != 1 {
			t.Errorf("the jailer copies the exec file, never links: %d links", exe.Nlink)
		}
		pid, err := os.ReadFile(filepath.Join(root, "firecracker.pid"))
		if rel.Version == "1.6.0" {
			if err == nil {
				t.Errorf("1.6 writes no pid file without --new-pid-ns: %q", pid)
			}
		} else if string(pid) != "1" {
			t.Errorf("pid file %q %v, want 1 (pid 1 of its namespace)", pid, err)
		}
		console, _ := os.ReadFile(spec.ConsoleLog)
		if !strings.Contains(string(console), fmt.Sprintf("uid %d gid %d, 0 environment variables, open fds [0 1 2]", owner.UID, owner.GID)) {
			t.Errorf("Firecracker must get no environment and only stdio:\n%s", console)
		}
		for _, name := range []string{LogFIFOName, MetricsFIFOName} {
			fi, err := os.Stat(filepath.Join(root, name))
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); fi.Mode()&os.ModeNamedPipe == 0 || int(st.Uid) != owner.UID || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v uid %d, want a FIFO of uid %d, 0600", name, fi.Mode(), st.Uid, owner.UID)
			}
		}
		// The requests after PUT /logger are in Firecracker's log, drained as it goes.
		waitLog(t, spec, "Successfully started microvm")
		for _, c := range apiCalls(t, spec.ConsoleLog) {
			if strings.Contains(c.Body, jr.Base) || strings.Contains(c.Body, spec.Dir) {
				t.Errorf("%s %s carries a host path: %s", c.Method, c.Path, c.Body)
			}
		}
		calls := apiCalls(t, spec.ConsoleLog)
		for _, want := range []string{`"log_path":"/logs.fifo"`, `"metrics_path":"/metrics.fifo"`, `"kernel_image_path":"/vmlinux"`, `"path_on_host":"/rootfs"`, `"path_on_host":"/disk1"`, `"uds_path":"/v.sock"`} {
			found := false
			for _, c := range calls {
				found = found || strings.Contains(c.Body, want)
			}
			if !found {
				t.Errorf("no body with %s", want)
			}
		}

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := inst.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := inst.Wait(); err != nil {
			t.Errorf("after Ctrl-Alt-Del: %v", err)
		}
		if _, err := os.Stat(filepath.Dir(root)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the jail is left: %v", err)
		}
		if _, ok, _ := jr.Owners.Lookup(spec.ID); ok {
			t.Error("the owner was not released")
		}
		if d := statT(t, spec.Disks[0].Path); d.Uid != 0 {
			t.Errorf("the VM's disk stays owned by uid %d", d.Uid)
		}
	})
}

func TestJailedStartFailureLeavesNothing(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		b, jr := jailedBackend(t, rel, "")
		spec := testSpec(t, "")
		// A step fails after the jailed Firecracker is up and configured.
		b.Steps = DefaultSteps().InsertBefore(StepInstanceStart, Step{Name: "refuse", Do: func(context.Context, operations.ClientIface, *Config) error {
			return errors.New("refused by the test")
		}})
		if _, err := b.Start(startCtx(t), spec); err == nil || !strings.Contains(err.Error(), "refused by the test") {
			t.Fatalf("start with a failing step: %v", err)
		}
		if pids := processesIn(t, jr.Base); len(pids) > 0 {
			t.Errorf("processes %v outlived the failed start", pids)
		}
		// A NIC with no namespace to find its TAP in is refused before anything runs.
		spec.NICs = []vmm.NIC{{TAP: jail.TAP, MAC: "02:fc:00:00:00:01"}}
		b.Steps = nil
		if _, err := b.Start(startCtx(t), spec); err == nil || !strings.Contains(err.Error(), "network namespace") {
			t.Fatalf("a NIC without a namespace: %v", err)
		}
		if ents, _ := os.ReadDir(filepath.Join(jr.Base, "firecracker")); len(ents) != 0 {
			t.Errorf("left in the jail base: %v", ents)
		}
		if list, _ := jr.Owners.List(); len(list) != 0 {
			t.Errorf("owners left: %v", list)
		}
	})
}

func TestJailedStaleJailIsRefused(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		b, jr := jailedBackend(t, rel, "")
		spec := testSpec(t, fctest.RebootArg)
		stale := filepath.Join(jr.Base, "firecracker", spec.ID, "root")
		os.MkdirAll(stale, 0o700)
		if _, err := b.Start(startCtx(t), spec); !errors.Is(err, jail.ErrStale) || !strings.Contains(err.Error(), "gc") {
			t.Fatalf("start over a stale jail: %v", err)
		}
		if _, err := os.Stat(stale); err != nil {
			t.Errorf("the stale jail is gc's to remove: %v", err)
		}
	})
}

// TestJailedExecFileFromTheCache: the cache stores Firecracker under its digest; the
// jailer is given a link named firecracker (1.6 refuses any other name).
func TestJailedExecFileFromTheCache(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		b, jr := jailedBackend(t, rel, "")
		blob := filepath.Join(jr.Base, "blobs", "0a1b2c3d")
		os.MkdirAll(filepath.Dir(blob), 0o755)
		if err := os.Link(rel.Firecracker, blob); err != nil {
			t.Fatal(err)
		}
		b.Binary = blob
		spec := testSpec(t, fctest.RebootArg)
		inst, err := b.Start(startCtx(t), spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := inst.Wait(); err != nil {
			t.Fatal(err)
		}
		if got, want := statT(t, filepath.Join(jr.Base, "bin", "v"+rel.Version, "firecracker")).Ino, statT(t, blob).Ino; got != want {
			t.Errorf("exec file is not a link of the cached binary")
		}
	})
}

func TestJailedCgroupLimits(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		dir := t.TempDir()
		cg := filepath.Join(dir, "cgroup")
		os.MkdirAll(cg, 0o755)
		os.WriteFile(filepath.Join(cg, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644)
		mounts := filepath.Join(dir, "mounts")
		os.WriteFile(mounts, []byte("cgroup2 "+cg+" cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"), 0o644)
		jailer, err := rel.WithConfig(dir, fctest.JailerConfig{ProcMounts: mounts})
		if err != nil {
			t.Fatal(err)
		}
		b, jr := jailedBackend(t, rel, jailer)
		jr.Mounts, jr.Cgroups = mounts, CgroupLimits
		spec := testSpec(t, "")
		inst, err := b.Start(startCtx(t), spec)
		if err != nil {
			t.Fatal(err)
		}
		waitConsole(t, spec, "foreign init is running")
		vm := filepath.Join(cg, "firegopher", spec.ID)
		for file, want := range map[string]string{
			"memory.max": strconv.Itoa((256 + 64 + 8) << 20),
			"cpu.max":    "200000 100000",
			"pids.max":   "34",
			// The jailer writes its own pid as it sees it: 1, in the new PID namespace
			// (a real cgroup.procs translates it to the host's).
			"cgroup.procs": "1",
		} {
			if b, err := os.ReadFile(filepath.Join(vm, file)); err != nil || strings.TrimSpace(string(b)) != want {
				t.Errorf("%s: %q %v, want %s", file, b, err, want)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(cg, "cgroup.subtree_control")); !strings.Contains(string(b), "+memory") {
			t.Errorf("controllers not enabled down the tree: %q", b)
		}
		inst.Kill()
		inst.Wait()
		if _, err := os.Stat(vm); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the VM's cgroup is left: %v", err)
		}
	})
}

func TestJailedCgroupLimitsRefusedOnAHybridHost(t *testing.T) {
	rel, err := fctest.Build(fctest.Versions[len(fctest.Versions)-1])
	if err != nil {
		t.Fatal(err)
	}
	b, jr := jailedBackend(t, rel, "")
	dir := t.TempDir()
	jr.Mounts = filepath.Join(dir, "mounts")
	unified := filepath.Join(dir, "unified")
	os.MkdirAll(unified, 0o755)
	os.WriteFile(filepath.Join(unified, "cgroup.controllers"), nil, 0o644)
	os.WriteFile(jr.Mounts, []byte("cgroup "+dir+"/memory cgroup rw,memory 0 0\ncgroup2 "+unified+" cgroup2 rw 0 0\n"), 0o644)
	jr.Cgroups = CgroupLimits
	spec := testSpec(t, fctest.RebootArg)
	if _, err := b.Start(startCtx(t), spec); !errors.Is(err, jail.ErrNoLimits) || !strings.Contains(err.Error(), "hybrid") {
		t.Fatalf("got %v, want the hybrid refusal", err)
	}
	if _, err := os.Stat(spec.ConsoleLog); !errors.Is(err, os.ErrNotExist) {
		t.Error("a process was started")
	}
	if list, _ := jr.Owners.List(); len(list) != 0 {
		t.Errorf("owners left: %v", list)
	}
	// Without limits the same host runs the VM (the jailer gets --cgroup-version 2).
	jr.Cgroups = CgroupLimitsIfAvailable
	inst, err := b.Start(startCtx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestJailerVersionMustMatch(t *testing.T) {
	old, err := fctest.Build(fctest.Versions[0])
	if err != nil {
		t.Fatal(err)
	}
	cur, err := fctest.Build(fctest.Versions[len(fctest.Versions)-1])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := jailedBackend(t, cur, old.Jailer)
	if _, err := b.Start(startCtx(t), testSpec(t, "")); err == nil || !strings.Contains(err.Error(), "different releases") {
		t.Fatalf("mixed releases: %v", err)
	}
}

// TestReclaim is gc after a supervisor crash: the jailed Firecracker runs on (no
// parent-death signal past the jailer's setuid); Reclaim kills it and removes its jail.
func TestReclaim(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		b, jr := jailedBackend(t, rel, "")
		spec := testSpec(t, "")
		inst, err := b.Start(startCtx(t), spec)
		if err != nil {
			t.Fatal(err)
		}
		waitConsole(t, spec, "foreign init is running")
		al, _, _ := jr.Owners.Lookup(spec.ID)
		// A jail whose owner is already released (a cleanup cut short after Release).
		orphan := filepath.Join(jr.Base, "firecracker", "orphan", "root")
		os.MkdirAll(orphan, 0o700)

		ids, err := jr.Jails()
		if err != nil || strings.Join(ids, ",") != "orphan,"+spec.ID {
			t.Fatalf("jails %q %v", ids, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, id := range ids {
			if err := jr.Reclaim(ctx, id); err != nil {
				t.Fatalf("reclaim %s: %v", id, err)
			}
		}
		if pids, _ := jail.Processes("/proc", al.Owner); len(pids) > 0 {
			t.Errorf("processes of the jail survive: %v", pids)
		}
		if err := inst.Wait(); err == nil {
			t.Error("a reclaimed VM's Firecracker was killed, not ended cleanly")
		}
		if ids, _ := jr.Jails(); len(ids) != 0 {
			t.Errorf("left after reclaim: %q", ids)
		}
		for _, id := range []string{spec.ID, "orphan"} {
			if err := jr.Reclaim(ctx, id); err != nil {
				t.Errorf("reclaim %s again: %v", id, err)
			}
		}
	})
}

// TestJailedNetwork: the VM's namespace with tap0 owned by the jail, joined by the jailer;
// Firecracker (as the jail's uid, in that namespace) attaches tap0, and the guest's DHCP
// discovery comes out of the host end of the veth, in a namespace of the test's own.
func TestJailedNetwork(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		b, jr := jailedBackend(t, rel, "")
		host := nstest.New(t, "fcnet")
		spec := testSpec(t, "")
		spec.ID = "vm-" + strconv.Itoa(rand.IntN(1e6))
		hostIf := "fgt" + strconv.Itoa(rand.IntN(1e9))
		const mac = "02:fc:00:00:00:2a"
		spec.NICs = []vmm.NIC{{TAP: jail.TAP, MAC: mac}}
		var n *jail.NetNS
		var sock int
		host.Run(t, func() error {
			var err error
			// The namespace name is the test's, so that parallel runs do not collide.
			if n, err = jail.CreateNetNS("fgt-"+spec.ID, hostIf); err != nil {
				return err
			}
			sock, err = nstest.PacketSocket(hostIf)
			return err
		})
		t.Cleanup(func() { host.Do(n.Remove) })
		defer syscall.Close(sock)
		jr.NetNS = func(id string) string {
			if id != spec.ID {
				t.Errorf("netns asked for %q", id)
			}
			return n.Path
		}
		inst, err := b.Start(startCtx(t), spec)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { inst.Kill(); inst.Wait() }()
		if src, dport, err := nstest.ReadUDPFrame(sock, 10*time.Second); err != nil || src != mac || dport != 67 {
			console, _ := os.ReadFile(spec.ConsoleLog)
			t.Fatalf("on %s: a frame from %s to port %d (%v), want the guest's DHCPDISCOVER from %s\nconsole:\n%s", hostIf, src, dport, err, mac, console)
		}
	})
}
