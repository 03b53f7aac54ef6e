package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestLookupByIDNamePrefix(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range []VM{{ID: "abc123000000", Name: "web"}, {ID: "abd999000000", Name: "db"}} {
		vm.CreatedAt = time.Now()
		if err := s.Create(&vm); err != nil {
			t.Fatal(err)
		}
	}
	for ref, want := range map[string]string{"abc123000000": "abc123000000", "web": "abc123000000", "abd": "abd999000000", "db": "abd999000000"} {
		vm, err := s.Lookup(ref)
		if err != nil || vm.ID != want {
			t.Errorf("%s: got %v %v, want %s", ref, vm, err, want)
		}
	}
	if _, err := s.Lookup("ab"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("ab: got %v, want ambiguous", err)
	}
	if _, err := s.Lookup("zzz"); !errors.Is(err, ErrNotFound) {
		t.Errorf("zzz: got %v, want not found", err)
	}
	if err := s.Create(&VM{ID: "ffff00000000", Name: "web"}); err == nil {
		t.Error("duplicate name accepted")
	}
}

func TestConcurrentCreatesAndUpdates(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("%012d", i)
			if err := s.Create(&VM{ID: id, Status: Created}); err != nil {
				t.Error(err)
				return
			}
			if _, err := s.Update(id, func(vm *VM) error { vm.Status = Running; return nil }); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	vms, err := s.List()
	if err != nil || len(vms) != 20 {
		t.Fatalf("%d records, %v", len(vms), err)
	}
	for _, vm := range vms {
		if vm.Status != Running {
			t.Errorf("%s: %s", vm.ID, vm.Status)
		}
	}
}

func TestNamesAreUniquePerRun(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range []VM{
		{ID: "aaaaaaaaaaaa", Name: "ubuntu-6.5", Run: "id-1"},
		{ID: "bbbbbbbbbbbb", Name: "ubuntu-6.5", Run: "id-12"},
		{ID: "cccccccccccc", Name: "fedora-6.2", Run: "id-12"},
	} {
		if err := s.Create(&vm); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Create(&VM{ID: "dddddddddddd", Name: "ubuntu-6.5", Run: "id-1"}); err == nil {
		t.Fatal("a name used twice in one run must be refused")
	}
	for ref, want := range map[string]string{"id-1/ubuntu-6.5": "aaaaaaaaaaaa", "id-12/ubuntu-6.5": "bbbbbbbbbbbb", "fedora-6.2": "cccccccccccc"} {
		if vm, err := s.Lookup(ref); err != nil || vm.ID != want {
			t.Errorf("%s: got %v %v, want %s", ref, vm, err, want)
		}
	}
	if _, err := s.Lookup("ubuntu-6.5"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("a name in two runs: got %v, want ambiguous naming the runs", err)
	}
	if _, err := s.Lookup("id-2/ubuntu-6.5"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown run: %v", err)
	}
}
