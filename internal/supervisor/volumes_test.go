package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/flock"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/volume"
)

func TestDeriveVolumes(t *testing.T) {
	m := &spec.Machine{
		ID: "aaaaaaaaaaaa", Mode: spec.ModeApp, CPUs: 1, Memory: 512 * spec.MiB,
		Process: spec.Process{Cmd: []string{"true"}},
		Volumes: []spec.Volume{
			{Source: "data", Target: "/data"},
			{Source: "/home/me/site", Target: "/srv", ReadOnly: true},
			{Source: "cfg", Target: "/etc/app", ReadOnly: true},
		},
	}
	targets := []string{"/data", "/srv", "/etc/app"}
	readOnly := []bool{false, true, true}
	for _, serials := range []bool{true, false} {
		cfg := GuestConfig(m, vmm.Caps{DiskSerials: serials}, nil)
		if _, err := cfg.Marshal(); err != nil {
			t.Fatalf("serials %v: %v", serials, err)
		}
		if len(cfg.Mounts) != 3 {
			t.Fatalf("mounts %+v", cfg.Mounts)
		}
		for i, mnt := range cfg.Mounts {
			want := vmconfig.Mount{Disk: vmconfig.Disk{Index: 1 + i, FSType: "ext4"}, Target: targets[i], ReadOnly: readOnly[i]}
			if serials {
				want.Disk = vmconfig.Disk{Serial: VolumeSerial(i), FSType: "ext4"}
			}
			if mnt != want {
				t.Errorf("serials %v: mount %d = %+v, want %+v", serials, i, mnt, want)
			}
		}
	}
	k := &assets.Kernel{Vmlinux: "sha256:00"}
	store, _ := assets.Open(t.TempDir())
	s := VMMSpec(m, "/state/vms/aaaaaaaaaaaa", vmm.Disk{Path: "/state/vms/aaaaaaaaaaaa/rootfs.ext4", Serial: RootSerial}, "/state/volumes", k, store, nil)
	want := []vmm.Disk{
		{Path: "/state/vms/aaaaaaaaaaaa/" + DiskFile, Serial: RootSerial},
		{Path: "/state/volumes/data/disk.ext4", Serial: "vol0"},
		{Path: "/state/vms/aaaaaaaaaaaa/volume1.ext4", Serial: "vol1", ReadOnly: true},
		{Path: "/state/volumes/cfg/disk.ext4", Serial: "vol2", ReadOnly: true},
	}
	if !reflect.DeepEqual(s.Disks, want) {
		t.Errorf("disks\n got %+v\nwant %+v", s.Disks, want)
	}
}

// volumeMachine is a test machine with the volumes of flags (as -v spells them); named
// volumes are created first.
func volumeMachine(t *testing.T, h *Host, cmd []string, vols ...string) *spec.Machine {
	t.Helper()
	m := testMachine(t, h, cmd...)
	var err error
	if m.Volumes, err = spec.ParseVolumes(vols); err != nil {
		t.Fatal(err)
	}
	return m
}

func createVolume(t *testing.T, h *Host, name string) {
	t.Helper()
	if _, err := h.Volumes().Create(context.Background(), name, 32*spec.MiB); err != nil {
		t.Fatal(err)
	}
}

func siteDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startDetached starts m as a detached VM served by this test binary.
func startDetached(t *testing.T, h *Host, m *spec.Machine) *state.VM {
	t.Helper()
	t.Setenv(serveEnv, h.StateDir)
	c, err := h.Create(m, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartDetached([]string{os.Args[0], "-test.run=^$"}); err != nil {
		t.Fatal(err)
	}
	rec, err := h.Lookup(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestVolumesAreHeldForTheVMsLife(t *testing.T) {
	h := testHost(t)
	createVolume(t, h, "data")
	site := siteDir(t)
	m := volumeMachine(t, h, []string{"sleep", "100"}, "data:/data", site+":/srv:ro")
	rec := startDetached(t, h, m)
	if _, err := os.Stat(filepath.Join(rec.Dir, VolumeFile(1))); err != nil {
		t.Errorf("the directory's drive: %v", err)
	}
	v, err := h.Volumes().Inspect("data")
	if err != nil || len(v.Users) != 1 || v.Users[0] != (volume.User{VM: m.ID}) {
		t.Fatalf("inspect while attached: %+v %v", v, err)
	}
	if err := h.Volumes().Remove("data"); !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), m.ID) {
		t.Errorf("rm while attached: %v", err)
	}

	// A second VM asking for it read-write (or read-only) fails to start, naming the volume
	// and its user, and leaves nothing.
	for _, flag := range []string{"data:/data", "data:/mnt:ro"} {
		second := volumeMachine(t, h, []string{"true"}, flag)
		c, err := h.Create(second, false)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Run(context.Background(), Stdio{})
		want := `attach-volumes: --volume: volume "data" is in use: attached to running VM ` + m.ID + ` (read-write)`
		if err == nil || err.Error() != want {
			t.Errorf("second VM with %s: %v\nwant %s", flag, err, want)
		}
		if _, err := os.Stat(filepath.Join(h.VMsDir(), second.ID)); !os.IsNotExist(err) {
			t.Errorf("the refused VM's directory: %v", err)
		}
	}

	if err := h.Stop(rec, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, h, rec.Dir) // the directory's drive is gone with the VM
	if v, _ := h.Volumes().Inspect("data"); len(v.Users) != 0 {
		t.Errorf("users after the VM ended: %+v", v.Users)
	}
	if err := h.Volumes().Remove("data"); err != nil {
		t.Fatalf("rm after the VM ended: %v", err)
	}
	if _, err := os.Stat(site); err != nil {
		t.Errorf("the host directory: %v", err)
	}
}

func TestReadOnlyVolumeIsShared(t *testing.T) {
	h := testHost(t)
	createVolume(t, h, "cfg")
	first := startDetached(t, h, volumeMachine(t, h, []string{"sleep", "100"}, "cfg:/etc/app:ro"))
	second := startDetached(t, h, volumeMachine(t, h, []string{"sleep", "100"}, "cfg:/etc/app:ro"))
	v, _ := h.Volumes().Inspect("cfg")
	if len(v.Users) != 2 {
		t.Errorf("users %+v, want both readers", v.Users)
	}
	for _, rec := range []*state.VM{first, second} {
		if err := h.Stop(rec, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Volumes().Remove("cfg"); err != nil {
		t.Fatal(err)
	}
}

// A failed start gives back what attach-volumes took, whether it is the step that failed
// (a missing volume after a good one) or a later one.
func TestFailedStartReleasesVolumes(t *testing.T) {
	h := testHost(t)
	createVolume(t, h, "data")
	site := siteDir(t)
	for name, tt := range map[string]struct {
		vols []string
		fail string
		want string
	}{
		"missing volume": {[]string{"data:/data", site + ":/srv", "nope:/nope"}, "", `attach-volumes: --volume: no volume named "nope" (make it with: firegopher volume create nope)`},
		"later step":     {[]string{"data:/data", site + ":/srv"}, StepWriteInitrd, StepWriteInitrd + ": injected"},
	} {
		t.Run(name, func(t *testing.T) {
			m := volumeMachine(t, h, []string{"true"}, tt.vols...)
			c, err := h.Create(m, true)
			if err != nil {
				t.Fatal(err)
			}
			vm, err := h.NewVM(c.st, c.Record)
			if err != nil {
				t.Fatal(err)
			}
			steps := DefaultSteps()
			if tt.fail != "" {
				steps, _ = steps.Replace(Step{Name: tt.fail, Do: func(context.Context, *VM) error { return errors.New("injected") }})
			}
			_, err = Supervise(context.Background(), vm, Options{Steps: steps, Lock: c.lock})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %s", err, tt.want)
			}
			assertNothingLeft(t, h, vm.Dir)
			a, err := h.Volumes().Attach("data", "ffffffffffff", false)
			if err != nil {
				t.Fatalf("the volume after a failed start: %v", err)
			}
			a.Release()
		})
	}
}

// A supervisor killed with SIGKILL takes its volume locks with it: the volume is free at
// once, with no gc, and gc finds nothing of the volume's to release.
func TestLostSupervisorFreesItsVolumes(t *testing.T) {
	h := testHost(t)
	createVolume(t, h, "data")
	m := volumeMachine(t, h, []string{"sleep", "100"}, "data:/data")
	rec := startDetached(t, h, m)
	if rec.SupervisorPID == 0 {
		t.Fatal("no supervisor pid recorded")
	}
	if _, err := h.Volumes().Attach("data", "ffffffffffff", false); !errors.Is(err, volume.ErrInUse) {
		t.Fatalf("attach while the VM runs: %v", err)
	}
	if err := syscall.Kill(rec.SupervisorPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Every lock of the process goes when it exits; wait for the volume's own.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, lock := range []string{volume.LockFile, filepath.Join(volume.UsersDir, m.ID)} {
		if err := flock.WaitReleased(ctx, filepath.Join(h.VolumesDir(), "data", lock)); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := h.Volumes().Inspect("data"); len(v.Users) != 0 {
		t.Errorf("users of a dead VM: %+v", v.Users)
	}
	a, err := h.Volumes().Attach("data", "ffffffffffff", false)
	if err != nil {
		t.Fatalf("attach after the supervisor died, before any gc: %v", err)
	}
	a.Release()
	waitReleased(rec.Dir)
	report, err := h.GC()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range report {
		if strings.Contains(line, "volume") {
			t.Errorf("gc had volume work to do: %q", line)
		}
	}
	if err := h.Volumes().Remove("data"); err != nil {
		t.Fatal(err)
	}
}

// A volume create or rm killed half-way leaves a dot directory that gc removes.
func TestGCRemovesVolumeDebris(t *testing.T) {
	h := testHost(t)
	createVolume(t, h, "data")
	debris := filepath.Join(h.VolumesDir(), ".new-web-123")
	os.MkdirAll(debris, 0o700)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(debris, old, old)
	report, err := h.GC()
	if err != nil {
		t.Fatal(err)
	}
	if len(report) != 1 || !strings.Contains(report[0], debris) {
		t.Errorf("report %q, want the debris", report)
	}
	if _, err := os.Stat(debris); !os.IsNotExist(err) {
		t.Errorf("debris: %v", err)
	}
	if _, err := h.Volumes().Inspect("data"); err != nil {
		t.Errorf("the volume: %v", err)
	}
}
