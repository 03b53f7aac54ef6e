package supervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/state"
)

func TestGCLeavesOwnedVMsAndCleansLostOnes(t *testing.T) {
	root := t.TempDir()
	vms := filepath.Join(root, "vms")
	st, err := state.Open(filepath.Join(root, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	mk := func(id string, status state.Status, detached bool) *VM {
		vm := &VM{ID: id, Dir: filepath.Join(vms, id)}
		os.MkdirAll(vm.Dir, 0o700)
		os.WriteFile(vm.path(DiskFile), []byte("disk"), 0o600)
		if err := st.Create(&state.VM{ID: id, Status: status, Detached: detached, Dir: vm.Dir, CreatedAt: old}); err != nil {
			t.Fatal(err)
		}
		return vm
	}
	live := mk("aaaaaaaaaaaa", state.Running, true)
	if err := lockDir(live); err != nil {
		t.Fatal(err)
	}
	defer unlockDir(live)
	lost := mk("bbbbbbbbbbbb", state.Running, true)
	lostForeground := mk("cccccccccccc", state.Running, false)
	stray := filepath.Join(vms, "dddddddddddd")
	os.MkdirAll(stray, 0o700)
	os.Chtimes(stray, old, old)

	report, err := GC(st, vms)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(report, "\n")
	for _, want := range []string{lost.ID, lostForeground.ID, "dddddddddddd"} {
		if !strings.Contains(joined, want) {
			t.Errorf("report lacks %s:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, live.ID) {
		t.Errorf("gc touched the live VM:\n%s", joined)
	}
	if _, err := os.Stat(live.path(DiskFile)); err != nil {
		t.Error("live VM's disk removed")
	}
	if _, err := os.Stat(lost.path(DiskFile)); !os.IsNotExist(err) {
		t.Error("lost VM's disk kept")
	}
	if r, _ := st.Get(lost.ID); r == nil || r.Status != state.Exited || !strings.Contains(r.Error, "supervisor died") {
		t.Errorf("lost detached VM's record: %+v", r)
	}
	if _, err := st.Get(lostForeground.ID); err == nil {
		t.Error("lost foreground VM's record kept")
	}
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Error("stray directory kept")
	}
	if again, _ := GC(st, vms); len(again) != 0 {
		t.Errorf("second gc found more: %v", again)
	}
}
