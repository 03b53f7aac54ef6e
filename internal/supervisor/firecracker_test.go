package supervisor

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

// The Firecracker tests run VMs on the jailed Firecracker backend built from fctest's
// doubles of a release: the supervisor drives it exactly as it would the real one.

// fcKernel is a vmlinux stand-in that takes virtio_mmio.device= (a Firecracker
// guest-config kernel), so that every release can boot it; fcOldKernel cannot (the
// default Debian kernel's case).
const (
	fcKernel    = "fake vmlinux\x00virtio_mmio.device\x00"
	fcOldKernel = "fake vmlinux without the parameter"
)

// fcServeEnv makes this test binary a detached supervisor of a Firecracker host (fcConfig).
const fcServeEnv = "SUPERVISOR_TEST_SERVE_FC"

// fcConfig is what a Firecracker host of the tests is made from, in this process or in a
// re-executed detached supervisor.
type fcConfig struct {
	StateDir    string `json:"state_dir"`
	Firecracker string `json:"firecracker"`
	Jailer      string `json:"jailer"`
	FirstUID    int    `json:"first_uid"`
}

// fcRelease builds the doubles of version, or skips without root (the jailer chroots
// and setuids for real).
func fcRelease(t *testing.T, version string) fctest.Release {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the jailer chroots, setuids and mknods")
	}
	rel, err := fctest.Build(version)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// fcHostConfig is a fresh state directory (short: the jail's socket paths must fit in
// sun_path) and a uid range of the test's own.
func fcHostConfig(t *testing.T, rel fctest.Release) fcConfig {
	t.Helper()
	dir, err := os.MkdirTemp("", "fcs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return fcConfig{StateDir: dir, Firecracker: rel.Firecracker, Jailer: rel.Jailer,
		FirstUID: 1_960_000_000 + rand.IntN(1_000_000)*100}
}

// newFCHost is the Host of c, its backend wired as cmd/firegopher wires it: jailed, the
// jail under the state directory, each VM's network namespace joined when it has one.
func newFCHost(t testing.TB, c fcConfig, log *slog.Logger) (*Host, *firecracker.Jailer) {
	h := &Host{StateDir: c.StateDir, Log: log}
	if err := os.MkdirAll(h.JailBase(), 0o755); err != nil {
		t.Fatal(err)
	}
	owners, err := jail.OpenAllocator(h.JailDB(), jail.Range{First: c.FirstUID, Count: 100})
	if err != nil {
		t.Fatal(err)
	}
	jr := &firecracker.Jailer{Binary: c.Jailer, Base: h.JailBase(), Owners: owners,
		Cgroups: firecracker.CgroupNoLimits, NetNS: VMNetNS}
	b := &firecracker.Backend{Binary: c.Firecracker, Jailer: jr, Logger: log}
	h.Backend = func(spec.VMM) (vmm.Backend, error) { return b, nil }
	h.Jails = jr
	return h, jr
}

// fcMachine is an app machine running cmd whose root disk is a tar of busybox (the fake
// guest unpacks it into its empty jail) and whose kernel is kernel.
func fcMachine(t *testing.T, h *Host, kernel string, cmd ...string) *spec.Machine {
	t.Helper()
	m := testMachine(t, h, cmd...)
	store, err := h.Store()
	if err != nil {
		t.Fatal(err)
	}
	vmlinux, err := store.PutBytes([]byte(kernel))
	if err != nil {
		t.Fatal(err)
	}
	k, err := store.PutJSON(assets.Kernel{Source: "test", Vmlinux: vmlinux})
	if err != nil {
		t.Fatal(err)
	}
	m.Assets.Kernel = string(k)
	busyboxTar(t, m.Assets.Rootfs)
	return m
}

// busyboxTar writes a tar of a static busybox as /bin/sh and friends to path.
func busyboxTar(t *testing.T, path string) {
	t.Helper()
	bb, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		bb, err = os.ReadFile("/bin/busybox")
	}
	if err != nil {
		t.Skip("no busybox to give the jailed guest a shell")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	for _, applet := range []string{"sh", "sleep", "echo", "cat"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox"})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	if err := os.WriteFile(path, buf.Bytes(), 0o444); err != nil {
		t.Fatal(err)
	}
}

// assertNoJail: nothing of VM id's jail is left: chroot, owner, netns, processes.
func assertNoJail(t *testing.T, h *Host, jr *firecracker.Jailer, id string) {
	t.Helper()
	if ids, err := jr.Jails(); err != nil || len(ids) > 0 {
		t.Errorf("jails left: %v (%v)", ids, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(h.JailBase(), jail.ExecName)); len(ents) > 0 {
		t.Errorf("chroots left under %s: %d", h.JailBase(), len(ents))
	}
	if _, err := os.Stat(jail.NetNSPath(id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("network namespace %s left (%v)", jail.NetNSName(id), err)
	}
	r := jr.Owners.Range()
	for uid := r.First; uid < r.First+r.Count; uid++ {
		if pids, _ := jail.Processes("/proc", jail.Owner{UID: uid, GID: uid}); len(pids) > 0 {
			t.Errorf("processes of jail uid %d left: %v", uid, pids)
		}
	}
}

func forEachFCRelease(t *testing.T, fn func(t *testing.T, rel fctest.Release)) {
	for _, v := range fctest.Versions {
		t.Run(fctest.SubtestName(v), func(t *testing.T) { fn(t, fcRelease(t, v)) })
	}
}

func TestFirecrackerRunExitCodeAndOutput(t *testing.T) {
	forEachFCRelease(t, func(t *testing.T, rel fctest.Release) {
		h, jr := newFCHost(t, fcHostConfig(t, rel), discardLog())
		// Building Firecracker's backend runs it (--version): Create's kernel check and the
		// start share one.
		builds, backend := 0, h.Backend
		h.Backend = func(v spec.VMM) (vmm.Backend, error) { builds++; return backend(v) }
		m := fcMachine(t, h, fcKernel, "sh", "-c", "echo out; echo err >&2; exit 3")
		c, err := h.Create(m, false)
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		exit, err := c.Run(context.Background(), Stdio{Stdout: &stdout, Stderr: &stderr})
		if err != nil {
			t.Fatal(err)
		}
		if exit.Code != 3 || stdout.String() != "out\n" || stderr.String() != "err\n" {
			t.Fatalf("exit %+v stdout %q stderr %q", exit, stdout.String(), stderr.String())
		}
		if builds != 1 {
			t.Errorf("the backend was built %d times for one run, want once", builds)
		}
		assertNoJail(t, h, jr, m.ID)
	})
}

// TestFirecrackerKernelGateBeforeAnyState: Firecracker 1.6 and a kernel that cannot take
// virtio_mmio.device= are refused by Create, naming both fixes, before a record or a
// directory exists.
func TestFirecrackerKernelGateBeforeAnyState(t *testing.T) {
	rel := fcRelease(t, "1.6.0")
	h, jr := newFCHost(t, fcHostConfig(t, rel), discardLog())
	m := fcMachine(t, h, fcOldKernel, "true")
	_, err := h.Create(m, false)
	if !errors.Is(err, firecracker.ErrNoMMIOCmdline) || !strings.Contains(err.Error(), "firecracker install --version") || !strings.Contains(err.Error(), "guest config") {
		t.Fatalf("Create: %v; want the kernel refused, naming a newer release and a guest-config kernel", err)
	}
	if _, err := h.Lookup(m.ID); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("a record exists: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.VMsDir(), m.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a VM directory exists: %v", err)
	}
	assertNoJail(t, h, jr, m.ID)
}

// startFCDetached creates m detached and starts this test binary as its supervisor.
func startFCDetached(t *testing.T, h *Host, c fcConfig, m *spec.Machine) *state.VM {
	t.Helper()
	cfg, _ := json.Marshal(c)
	t.Setenv(fcServeEnv, string(cfg))
	cr, err := h.Create(m, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := cr.StartDetached([]string{os.Args[0], "-test.run=^$"}); err != nil {
		t.Fatal(err)
	}
	// A test that fails midway leaves no VM, jail or namespace running behind it.
	t.Cleanup(func() {
		if rec, err := h.Lookup(m.ID); err == nil {
			h.Stop(rec, 5*time.Second)
		}
		h.GC()
	})
	rec, err := h.Lookup(m.ID)
	if err != nil || rec.Status != state.Running || !Running(rec) {
		t.Fatalf("after StartDetached: %+v %v", rec, err)
	}
	return rec
}

func TestFirecrackerDetachedStopKillRm(t *testing.T) {
	forEachFCRelease(t, func(t *testing.T, rel fctest.Release) {
		c := fcHostConfig(t, rel)
		h, jr := newFCHost(t, c, discardLog())
		m := fcMachine(t, h, fcKernel, "sh", "-c", "echo hello; exec sleep 100")
		rec := startFCDetached(t, h, c, m)
		waitForHello(t, rec.Dir)
		cl, err := Dial(rec.Dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.Exec(agentExec("sh", "-c", "echo from exec; exit 4")); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		exit, err := cl.Copy(&out, &out)
		cl.Close()
		if err != nil || exit.Code != 4 || out.String() != "from exec\n" {
			t.Fatalf("exec: %q %+v %v", out.String(), exit, err)
		}
		if err := h.Stop(rec, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if rec, err = h.Wait(rec); err != nil || rec.ExitCode == nil || *rec.ExitCode != 143 {
			t.Fatalf("after stop: %+v %v", rec, err)
		}
		assertNothingLeft(t, h, rec.Dir)
		assertNoJail(t, h, jr, m.ID)
		// Firecracker's log and metrics, drained from the jail's FIFOs, stay with the
		// console log until rm.
		if b, _ := os.ReadFile(filepath.Join(rec.Dir, ConsoleLog+firecracker.LogSuffix)); !bytes.Contains(b, []byte("Successfully started microvm")) {
			t.Errorf("Firecracker's log in the VM directory: %q", b)
		}
		if b, _ := os.ReadFile(filepath.Join(rec.Dir, ConsoleLog+firecracker.MetricsSuffix)); !bytes.Contains(b, []byte(`"utc_timestamp_ms"`)) {
			t.Errorf("Firecracker's metrics in the VM directory: %q", b)
		}
		if err := h.Remove(rec, false); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(rec.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("rm left %s", rec.Dir)
		}

		// kill: the workload gets SIGKILL through init.
		m2 := fcMachine(t, h, fcKernel, "sh", "-c", "echo hello; exec sleep 100")
		rec2 := startFCDetached(t, h, c, m2)
		waitForHello(t, rec2.Dir)
		cl2, err := Dial(rec2.Dir)
		if err != nil {
			t.Fatal(err)
		}
		err = cl2.Signal(int(syscall.SIGKILL))
		cl2.Close()
		if err != nil {
			t.Fatal(err)
		}
		if rec2, err = h.Wait(rec2); err != nil || rec2.ExitCode == nil || *rec2.ExitCode != 137 {
			t.Fatalf("after kill: %+v %v", rec2, err)
		}
		assertNoJail(t, h, jr, m2.ID)
		if err := h.Remove(rec2, false); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(rec2.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("rm left %s", rec2.Dir)
		}
	})
}

// lockedBuffer is a log sink shared by goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveFCIfRequested is the detached-supervisor half of the Firecracker tests: this test
// binary, re-executed, serving the VM created for it, logging at Debug to its stderr (the
// VM's supervisor.log).
func serveFCIfRequested() {
	raw := os.Getenv(fcServeEnv)
	if raw == "" || len(os.Args) < 2 || os.Args[1] != "-test.run=^$" {
		return
	}
	var c fcConfig
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, _ := newFCHost(fatalTB{}, c, log)
	st, err := h.State()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vms, _ := st.List()
	err = fmt.Errorf("no VM to serve")
	for _, v := range vms {
		if v.Status == state.Created {
			err = h.ServeDetached(context.Background(), v.ID)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// fatalTB is the testing.TB of a re-executed supervisor: a failure ends the process.
type fatalTB struct{ testing.TB }

func (fatalTB) Fatal(args ...any) { fmt.Fprintln(os.Stderr, args...); os.Exit(1) }
