// Package flock is firegopher's one wrapper around flock(2) locks on files, shared by every
// firegopher process on the host.
//
// A flock belongs to an open file description: two os.OpenFile calls on the same path
// contend even inside one process, a lock lives as long as any descriptor of its
// description is open (including one passed to a child process), and it is dropped by the
// kernel when the last one closes, so a crashed holder never leaves a stale lock behind.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrHeld is wrapped by TryLock when another open file description holds the lock.
var ErrHeld = errors.New("held by another open file")

// fileMode of lock files: readable by all so that Held and WaitReleased work for users who
// cannot take the lock themselves (taking it needs write access).
const fileMode = 0o644

// Lock takes the exclusive lock on path (creating the file if missing), waiting until it is
// free or ctx is done. The lock is held while the returned file is open, here or in a child
// it was passed to; closing it releases the lock.
func Lock(ctx context.Context, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := waitFlock(ctx, f, unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// TryLock takes the exclusive lock on path (creating the file if missing) if it is free,
// and fails with an error wrapping ErrHeld at once if it is not.
func TryLock(path string) (*os.File, error) { return tryLock(path, unix.LOCK_EX) }

// TryLockShared takes a shared lock on path (creating the file if missing) unless an
// exclusive holder has it, and fails with an error wrapping ErrHeld at once if one does.
// Shared holders exclude exclusive ones (TryLock, Lock) but not each other: many readers,
// or one writer. Held does not see shared holders.
func TryLockShared(path string) (*os.File, error) { return tryLock(path, unix.LOCK_SH) }

func tryLock(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := flock(f, how|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			err = ErrHeld
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// Held reports whether the exclusive lock on path is held now, through any open file
// description (this process's own included). A missing or unreadable file is not held.
func Held(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	// A shared probe: it fails only against an exclusive holder, so concurrent probes (or
	// WaitReleased callers) never make each other see the lock as held.
	return errors.Is(flock(f, unix.LOCK_SH|unix.LOCK_NB), unix.EWOULDBLOCK)
}

// WaitReleased waits until no one holds the exclusive lock on path, or ctx is done. It
// takes nothing: the shared lock it waits with is dropped at once. A missing file has no
// holder.
func WaitReleased(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wait for lock %s: %w", path, err)
	}
	if err := waitFlock(ctx, f, unix.LOCK_SH); err != nil {
		return fmt.Errorf("wait for lock %s: %w", path, err)
	}
	return f.Close()
}

// waitFlock blocks for lock how on f until it is granted or ctx is done; on any error f is
// closed. flock(2) cannot be interrupted, so when ctx ends first a goroutine waits on and
// closes f, releasing the lock the moment it is granted.
func waitFlock(ctx context.Context, f *os.File, how int) error {
	if ctx.Done() == nil {
		if err := flock(f, how); err != nil {
			f.Close()
			return err
		}
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- flock(f, how) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
		}
		return err
	case <-ctx.Done():
		go func() { <-done; f.Close() }()
		return fmt.Errorf("still held: %w", context.Cause(ctx))
	}
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}
