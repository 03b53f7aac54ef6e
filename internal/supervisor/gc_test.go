package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
)

// fakeProcs is an injected process table: gc tests never look at the host's processes.
type fakeProcs struct {
	procs  []Process
	killed []int
}

func (f *fakeProcs) Tagged() ([]Process, error) {
	var alive []Process
	for _, p := range f.procs {
		if !slices.Contains(f.killed, p.Pid) {
			alive = append(alive, p)
		}
	}
	return alive, nil
}

func (f *fakeProcs) Kill(pid int) error { f.killed = append(f.killed, pid); return nil }

func TestGCLeavesOwnedVMsAndCleansLostOnes(t *testing.T) {
	root := t.TempDir()
	other := t.TempDir() // another state directory on the same host
	procs := &fakeProcs{}
	h := &Host{StateDir: root, Log: discardLog(), Procs: procs}
	st, err := h.State()
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	mk := func(id string, status state.Status, detached bool, pid int) *VM {
		vm := &VM{Machine: &spec.Machine{ID: id}, Dir: filepath.Join(h.VMsDir(), id)}
		os.MkdirAll(vm.Dir, 0o700)
		os.WriteFile(vm.path(DiskFile), []byte("disk"), 0o600)
		os.WriteFile(vm.path("qmp.sock"), nil, 0o600) // a backend's socket gc knows nothing about
		os.WriteFile(vm.path(ConsoleLog), []byte("boot"), 0o600)
		if err := st.Create(&state.VM{ID: id, Status: status, Detached: detached, Dir: vm.Dir, CreatedAt: old}); err != nil {
			t.Fatal(err)
		}
		procs.procs = append(procs.procs, Process{Pid: pid, VMDir: vm.Dir})
		return vm
	}
	live := mk("aaaaaaaaaaaa", state.Running, true, 101)
	if err := lockDir(live); err != nil {
		t.Fatal(err)
	}
	defer live.lock.Close()
	lost := mk("bbbbbbbbbbbb", state.Running, true, 102)
	lostForeground := mk("cccccccccccc", state.Running, false, 103)
	stray := filepath.Join(h.VMsDir(), "dddddddddddd")
	os.MkdirAll(stray, 0o700)
	os.Chtimes(stray, old, old)
	// A VMM of the other state directory, with no supervisor there either: not ours.
	procs.procs = append(procs.procs, Process{Pid: 201, VMDir: filepath.Join(other, "vms", "eeeeeeeeeeee")})
	// A VMM of ours whose directory is gone entirely.
	procs.procs = append(procs.procs, Process{Pid: 104, VMDir: filepath.Join(h.VMsDir(), "ffffffffffff")})

	report, err := h.GC()
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(report, "\n")
	for _, want := range []string{lost.ID(), lostForeground.ID(), "dddddddddddd", "process 102", "process 103", "process 104"} {
		if !strings.Contains(joined, want) {
			t.Errorf("report lacks %s:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, "aaaaaaaaaaaa") {
		t.Errorf("gc touched the live VM:\n%s", joined)
	}
	slices.Sort(procs.killed)
	if !slices.Equal(procs.killed, []int{102, 103, 104}) {
		t.Errorf("killed %v, want the lost VMs' VMMs only (not the live one's, not another state dir's)", procs.killed)
	}
	if _, err := os.Stat(live.path(DiskFile)); err != nil {
		t.Error("live VM's disk removed")
	}
	if _, err := os.Stat(lost.path(DiskFile)); !os.IsNotExist(err) {
		t.Error("lost VM's disk kept")
	}
	if _, err := os.Stat(lost.path("qmp.sock")); !os.IsNotExist(err) {
		t.Error("lost VM's backend socket kept")
	}
	if _, err := os.Stat(lost.path(ConsoleLog)); err != nil {
		t.Error("lost VM's console log removed: logs stay until rm")
	}
	if r, _ := st.Get(lost.ID()); r == nil || r.Status != state.Exited || !strings.Contains(r.Error, "supervisor died") {
		t.Errorf("lost detached VM's record: %+v", r)
	}
	if _, err := st.Get(lostForeground.ID()); err == nil {
		t.Error("lost foreground VM's record kept")
	}
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Error("stray directory kept")
	}
	if again, _ := h.GC(); len(again) != 0 {
		t.Errorf("second gc found more: %v", again)
	}
}
