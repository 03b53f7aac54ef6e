package supervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/firegopher/firegopher/internal/flock"
)

// lockDir takes the lock that says "a supervisor owns this VM": gc leaves a VM alone while
// the lock is held, and the kernel drops it when the supervisor dies, however it dies.
// It is held from before the first step until after the outcome is recorded, so that
// whoever waits for the lock finds the final record.
func lockDir(vm *VM) error {
	if vm.lock != nil {
		return nil // claimed by whoever created the VM (ClaimDir)
	}
	if err := os.MkdirAll(vm.Dir, 0o700); err != nil {
		return err
	}
	f, err := flock.TryLock(vm.path(LockFile))
	if err != nil {
		return fmt.Errorf("VM %s is owned by another supervisor: %w", vm.ID(), err)
	}
	vm.lock = f
	return nil
}

// ClaimDir creates the VM's directory already locked: it is made under a temporary name,
// locked, then renamed into place, so gc never sees it unowned. The lock lives as long as
// the returned file (and any process it is passed to) keeps it open.
func ClaimDir(vmsDir, id string) (*os.File, error) {
	if err := os.MkdirAll(vmsDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(vmsDir, "."+id+"-")
	if err != nil {
		return nil, err
	}
	f, err := flock.Lock(context.Background(), filepath.Join(tmp, LockFile))
	if err == nil {
		err = os.Rename(tmp, filepath.Join(vmsDir, id))
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.RemoveAll(tmp)
		return nil, err
	}
	return f, nil
}

// Owned says whether a live supervisor holds dir's lock.
func Owned(dir string) bool { return flock.Held(filepath.Join(dir, LockFile)) }

// waitReleased returns once no supervisor holds dir's lock (it has recorded the exit).
func waitReleased(dir string) {
	flock.WaitReleased(context.Background(), filepath.Join(dir, LockFile))
}
