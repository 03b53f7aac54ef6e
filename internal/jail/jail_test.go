package jail

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestAllocator(t *testing.T) {
	db := filepath.Join(t.TempDir(), "jail.db")
	a, err := OpenAllocator(db, Range{First: 5000, Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]string{}
	for _, id := range []string{"a", "b", "c"} {
		o, err := a.Allocate(id)
		if err != nil {
			t.Fatal(err)
		}
		if o.UID < 5000 || o.UID > 5002 || o.GID != o.UID {
			t.Errorf("%s: %+v outside the range", id, o)
		}
		if other, dup := seen[o.UID]; dup {
			t.Errorf("%s and %s share uid %d", id, other, o.UID)
		}
		seen[o.UID] = id
	}
	if _, err := a.Allocate("d"); !errors.Is(err, ErrExhausted) {
		t.Errorf("a full range: %v", err)
	}
	// Persisted: another process (here another allocator) sees the same owners.
	b, err := OpenAllocator(db, Range{First: 5000, Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	ob, err := b.Allocate("b")
	if err != nil || seen[ob.UID] != "b" {
		t.Errorf("b again: %+v %v", ob, err)
	}
	if err := b.Release("b"); err != nil {
		t.Fatal(err)
	}
	if err := b.Release("b"); err != nil {
		t.Errorf("releasing twice: %v", err)
	}
	od, err := a.Allocate("d")
	if err != nil || od.UID != ob.UID {
		t.Errorf("d gets b's released uid %d: %+v %v", ob.UID, od, err)
	}
	list, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, al := range list {
		ids = append(ids, al.ID)
	}
	if !reflect.DeepEqual(ids, []string{"a", "c", "d"}) {
		t.Errorf("list %q", ids)
	}
	if _, ok, err := a.Lookup("b"); ok || err != nil {
		t.Errorf("lookup of a released jail: %v %v", ok, err)
	}
}

func TestAllocatorDoesNotReuseAtOnce(t *testing.T) {
	a, err := OpenAllocator(filepath.Join(t.TempDir(), "jail.db"), Range{First: 100, Count: 10})
	if err != nil {
		t.Fatal(err)
	}
	o1, _ := a.Allocate("x")
	a.Release("x")
	o2, _ := a.Allocate("y")
	if o1 == o2 {
		t.Errorf("a just released uid %d was handed out again at once", o1.UID)
	}
}

func TestRangeRefusesRoot(t *testing.T) {
	for _, r := range []Range{{First: 0, Count: 10}, {First: -5, Count: 10}, {First: 10, Count: 0}, {First: 1 << 32, Count: 1}} {
		if err := r.Validate(); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	if err := DefaultRange.Validate(); err != nil {
		t.Error(err)
	}
	j := Jail{Base: "/j", ExecFile: "/x/firecracker", ID: "vm1", Owner: Owner{UID: 0, GID: 1000}}
	if err := j.Validate(); err == nil || !strings.Contains(err.Error(), "never root") {
		t.Errorf("uid 0: %v", err)
	}
}

func TestValidateID(t *testing.T) {
	for id, ok := range map[string]bool{"vm-1": true, "0123456789ab": true, "": false, "vm_1": false, "a/b": false, strings.Repeat("a", 65): false, strings.Repeat("a", 64): true} {
		if err := ValidateID(id); (err == nil) != ok {
			t.Errorf("%q: %v", id, err)
		}
	}
}

func testJail(t *testing.T) *Jail {
	t.Helper()
	base := t.TempDir()
	return &Jail{Base: base, ExecFile: filepath.Join(base, "bin", "v1", ExecName), ID: "vm1", Owner: Owner{UID: 4242, GID: 4243}}
}

func stat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

func TestPlaceAndRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chowns")
	}
	j := testJail(t)
	if err := j.Create(); err != nil {
		t.Fatal(err)
	}
	if got, want := j.Root(), filepath.Join(j.Base, "firecracker", "vm1", "root"); got != want {
		t.Errorf("root %s, want %s", got, want)
	}
	if err := j.Create(); !errors.Is(err, ErrStale) {
		t.Errorf("second create: %v", err)
	}
	src := t.TempDir()
	blob := filepath.Join(src, "blob")
	os.WriteFile(blob, []byte("kernel"), 0o444)
	clone := filepath.Join(src, "rootfs")
	os.WriteFile(clone, []byte("disk"), 0o444)

	in, err := j.Place(blob, "vmlinux", Shared)
	if err != nil || in != "/vmlinux" {
		t.Fatalf("place shared: %q %v", in, err)
	}
	if st := stat(t, blob); st.Uid != 0 || st.Mode&0o777 != 0o444 || st.Nlink != 2 {
		t.Errorf("a shared file is linked and never chowned: uid %d mode %o links %d", st.Uid, st.Mode&0o777, st.Nlink)
	}
	if _, err := j.Place(clone, "rootfs", Owned); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, j.HostPath("/rootfs")); st.Uid != 4242 || st.Gid != 4243 || st.Mode&0o777 != 0o600 || st.Nlink != 2 {
		t.Errorf("the owned disk: uid %d gid %d mode %o links %d", st.Uid, st.Gid, st.Mode&0o777, st.Nlink)
	}
	if _, err := j.Place(clone, "../escape", Owned); err == nil {
		t.Error("a name with a slash was accepted")
	}
	if err := j.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(j.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("jail dir left: %v", err)
	}
	if st := stat(t, clone); st.Uid != 0 || st.Nlink != 1 {
		t.Errorf("the VM's disk goes back to root: uid %d links %d", st.Uid, st.Nlink)
	}
	if err := j.Remove(); err != nil {
		t.Errorf("second remove: %v", err)
	}
}

func TestPlaceCopiesSharedAcrossFileSystems(t *testing.T) {
	j := testJail(t)
	if err := j.Create(); err != nil {
		t.Fatal(err)
	}
	// /proc/self/... cannot be linked anywhere: the fallback copy is taken.
	src := "/proc/self/cmdline"
	if _, err := j.Place(src, "initrd", Shared); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(j.HostPath("/initrd"))
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("copy: %v %v", fi, err)
	}
	if _, err := j.Place(src, "rootfs", Owned); err == nil || !strings.Contains(err.Error(), "file system of the jail base") {
		t.Errorf("an owned file that cannot be linked: %v", err)
	}
}

func TestExecFile(t *testing.T) {
	base := t.TempDir()
	blob := filepath.Join(t.TempDir(), "0123abcd")
	os.WriteFile(blob, []byte("\x7fELF firecracker"), 0o555)
	p, err := ExecFile(base, blob, "v1.16.1")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(base, "bin", "v1.16.1", "firecracker"); p != want {
		t.Errorf("exec file %s, want %s", p, want)
	}
	a, _ := os.Stat(blob)
	b, _ := os.Stat(p)
	if !os.SameFile(a, b) {
		t.Error("not a hard link of the binary")
	}
	// Asked again: the same file, untouched.
	if p2, err := ExecFile(base, blob, "v1.16.1"); err != nil || p2 != p {
		t.Errorf("again: %s %v", p2, err)
	}
	// Another binary under the same tag replaces it.
	other := filepath.Join(t.TempDir(), "ffff")
	os.WriteFile(other, []byte("\x7fELF another build"), 0o555)
	if _, err := ExecFile(base, other, "v1.16.1"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "\x7fELF another build" {
		t.Errorf("stale exec file kept: %q", b)
	}
	// A binary already called firecracker (through a symlink too) is used as it is.
	named := filepath.Join(t.TempDir(), "firecracker")
	os.WriteFile(named, []byte("x"), 0o555)
	link := filepath.Join(t.TempDir(), "fc")
	os.Symlink(named, link)
	if p, err := ExecFile(base, link, "v1"); err != nil || p != named {
		t.Errorf("named binary: %s %v", p, err)
	}
	if _, err := ExecFile(base, blob, "../x"); err == nil {
		t.Error("a tag with a slash was accepted")
	}
}

func TestJailerArgs(t *testing.T) {
	j := Jail{Base: "/var/lib/fg/jail", ExecFile: "/var/lib/fg/jail/bin/v1.16.1/firecracker", ID: "vm-1", Owner: Owner{UID: 1900000001, GID: 1900000001}}
	got := j.JailerArgs(Args{
		Cgroup:      []string{"--cgroup-version", "2"},
		NetNS:       "/run/netns/fg-vm-1",
		NoFile:      4096,
		Firecracker: []string{"--api-sock", "/firecracker.sock"},
	})
	want := []string{
		"--id", "vm-1", "--exec-file", "/var/lib/fg/jail/bin/v1.16.1/firecracker",
		"--uid", "1900000001", "--gid", "1900000001", "--chroot-base-dir", "/var/lib/fg/jail",
		"--netns", "/run/netns/fg-vm-1", "--resource-limit", "no-file=4096",
		"--cgroup-version", "2", "--", "--api-sock", "/firecracker.sock",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	for _, a := range got {
		if a == "--daemonize" || a == "--new-pid-ns" {
			t.Errorf("%s: the caller must own Firecracker's process", a)
		}
	}
}

// fakeHost writes a /proc/mounts and a cgroup file system tree for DetectCgroups.
func fakeHost(t *testing.T, mounts string, controllers string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	cg := filepath.Join(dir, "cgroup")
	mounts = strings.ReplaceAll(mounts, "$CG", cg)
	for _, line := range strings.Split(strings.TrimSpace(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 2 && strings.HasPrefix(f[2], "cgroup") {
			os.MkdirAll(f[1], 0o755)
			if f[2] == "cgroup2" {
				os.WriteFile(filepath.Join(f[1], "cgroup.controllers"), []byte(controllers+"\n"), 0o644)
			}
		}
	}
	p := filepath.Join(dir, "mounts")
	os.WriteFile(p, []byte(mounts), 0o644)
	return p, cg
}

const (
	mountsV2 = `sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 $CG cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
`
	// This CI machine's layout.
	mountsHybrid = `tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup $CG/cpu cgroup rw,relatime,cpu 0 0
cgroup $CG/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup $CG/memory cgroup rw,relatime,memory 0 0
cgroup $CG/pids cgroup rw,relatime,pids 0 0
cgroup $CG/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 $CG/unified cgroup2 rw,relatime 0 0
`
	mountsV1 = `cgroup $CG/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup $CG/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
`
)

func TestDetectCgroups(t *testing.T) {
	for _, tc := range []struct {
		name, mounts, controllers string
		mode                      CgroupMode
		limits                    string // "" ok, else a part of the refusal
		noLimits                  []string
	}{
		{"v2", mountsV2, "cpuset cpu io memory hugetlb pids rdma misc", CgroupV2, "", []string{"--cgroup-version", "2"}},
		{"v2 without pids delegated", mountsV2, "cpu memory", CgroupV2, "no pids controller", []string{"--cgroup-version", "2"}},
		{"hybrid", mountsHybrid, "", CgroupHybrid, "hybrid host", []string{"--cgroup-version", "2"}},
		{"v1", mountsV1, "", CgroupV1, "no cgroup2 hierarchy (v1 mode)", []string{"--cgroup-version", "1"}},
		{"none", "proc /proc proc rw 0 0\n", "", CgroupNone, "no cgroup2 hierarchy (none mode)", []string{"--cgroup-version", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mounts, _ := fakeHost(t, tc.mounts, tc.controllers)
			c, err := DetectCgroups(mounts)
			if err != nil {
				t.Fatal(err)
			}
			if c.Mode != tc.mode {
				t.Errorf("mode %s, want %s", c.Mode, tc.mode)
			}
			args, err := c.CgroupArgs(DefaultParent, LimitsFor(2, 512))
			if tc.limits == "" {
				want := []string{"--cgroup-version", "2", "--parent-cgroup", "firegopher",
					"--cgroup", "memory.max=" + strconv.Itoa((512+64+16)<<20), "--cgroup", "cpu.max=200000 100000", "--cgroup", "pids.max=34"}
				if err != nil || !reflect.DeepEqual(args, want) {
					t.Errorf("got %q %v\nwant %q", args, err, want)
				}
			} else if !errors.Is(err, ErrNoLimits) || !strings.Contains(err.Error(), tc.limits) {
				t.Errorf("got %q %v, want ErrNoLimits naming %q", args, err, tc.limits)
			}
			if got := c.NoCgroupArgs(); !reflect.DeepEqual(got, tc.noLimits) {
				t.Errorf("no limits: %q, want %q", got, tc.noLimits)
			}
		})
	}
	if _, err := DetectCgroups(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("missing mounts file accepted")
	}
}

func TestMountPathsAreUnescaped(t *testing.T) {
	mounts, _ := fakeHost(t, "cgroup2 /sys/fs/cgroup/with\\040space cgroup2 rw 0 0\n", "")
	c, err := DetectCgroups(mounts)
	if err != nil || c.Unified != "/sys/fs/cgroup/with space" {
		t.Errorf("unified %q %v", c.Unified, err)
	}
}

func TestRemoveCgroupOfAFakeCgroupFS(t *testing.T) {
	mounts, cg := fakeHost(t, mountsV2, "memory cpu pids")
	c, _ := DetectCgroups(mounts)
	dir := c.CgroupDir(DefaultParent, "vm1")
	if dir != filepath.Join(cg, "firegopher", "vm1") {
		t.Fatalf("cgroup dir %s", dir)
	}
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "memory.max"), []byte("1"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.RemoveCgroup(ctx, DefaultParent, "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("left: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(dir)); err != nil {
		t.Errorf("the parent must stay: %v", err)
	}
	if err := c.RemoveCgroup(ctx, DefaultParent, "vm1"); err != nil {
		t.Errorf("again: %v", err)
	}
}

func TestProcesses(t *testing.T) {
	proc := t.TempDir()
	for pid, uid := range map[string]string{"1": "0", "42": "1900000001", "43": "1900000001", "44": "1900000002", "45": "1900000001 zombie", "self": "1900000001"} {
		state := "S (sleeping)"
		if u, ok := strings.CutSuffix(uid, " zombie"); ok {
			uid, state = u, "Z (zombie)"
		}
		os.MkdirAll(filepath.Join(proc, pid), 0o755)
		os.WriteFile(filepath.Join(proc, pid, "status"), []byte("Name:\tfirecracker\nState:\t"+state+"\nUid:\t"+uid+"\t"+uid+"\t"+uid+"\t"+uid+"\n"), 0o644)
	}
	got, err := Processes(proc, Owner{UID: 1900000001, GID: 1900000001})
	if err != nil || !reflect.DeepEqual(got, []int{42, 43}) {
		t.Errorf("got %v %v", got, err)
	}
}
