package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/spec"
)

// fakeJails is an injected jail keeper: the gc test never touches a real jail.
type fakeJails struct {
	ids       []string
	reclaimed []string
	fail      string // Reclaim of this id fails
}

func (f *fakeJails) Jails() ([]string, error) {
	var left []string
	for _, id := range f.ids {
		if !slices.Contains(f.reclaimed, id) {
			left = append(left, id)
		}
	}
	return left, nil
}

func (f *fakeJails) Reclaim(_ context.Context, id string) error {
	if id == f.fail {
		return errors.New("injected")
	}
	f.reclaimed = append(f.reclaimed, id)
	return nil
}

func TestGCReclaimsTheJailsOfVMsWithoutASupervisor(t *testing.T) {
	jails := &fakeJails{}
	h := &Host{StateDir: t.TempDir(), Log: discardLog(), Procs: &fakeProcs{}, Jails: jails}
	live := &VM{Machine: &spec.Machine{ID: "aaaaaaaaaaaa"}, Dir: filepath.Join(h.VMsDir(), "aaaaaaaaaaaa")}
	if err := lockDir(live); err != nil {
		t.Fatal(err)
	}
	defer live.lock.Close()
	// A jail whose VM directory is unowned, and one with no directory or record at all
	// (its VM was removed while its jailed VMM survived).
	os.MkdirAll(filepath.Join(h.VMsDir(), "bbbbbbbbbbbb"), 0o700)
	jails.ids = []string{live.ID(), "bbbbbbbbbbbb", "cccccccccccc"}

	report, err := h.GC()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(jails.reclaimed)
	if !slices.Equal(jails.reclaimed, []string{"bbbbbbbbbbbb", "cccccccccccc"}) {
		t.Errorf("reclaimed %v, want the jails of the VMs without a supervisor only", jails.reclaimed)
	}
	joined := strings.Join(report, "\n")
	for _, id := range []string{"bbbbbbbbbbbb", "cccccccccccc"} {
		if !strings.Contains(joined, "vm "+id+": supervisor gone; jail removed") {
			t.Errorf("report lacks the jail of %s:\n%s", id, joined)
		}
	}
	if strings.Contains(joined, live.ID()) {
		t.Errorf("gc touched the live VM:\n%s", joined)
	}
	if again, err := h.GC(); err != nil || len(again) > 0 {
		t.Errorf("second gc: %v %v", again, err)
	}

	// A jail that cannot be reclaimed is an error naming the VM.
	jails.ids, jails.fail = append(jails.ids, "dddddddddddd"), "dddddddddddd"
	if _, err := h.GC(); err == nil || !strings.Contains(err.Error(), "dddddddddddd") {
		t.Errorf("gc with a failing reclaim: %v", err)
	}
}
