package flock

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// helperEnv makes the test binary a helper process: "lock:PATH" takes the lock on PATH,
// "hold" only keeps its inherited descriptors. Either prints "ready" and exits when its
// stdin closes.
const helperEnv = "FLOCK_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv(helperEnv); ok {
		if path, ok := strings.CutPrefix(mode, "lock:"); ok {
			if _, err := Lock(context.Background(), path); err != nil {
				os.Stderr.WriteString(err.Error() + "\n")
				os.Exit(2)
			}
		}
		os.Stdout.WriteString("ready\n")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper starts a helper process in mode, waits until it is ready, and returns a function
// that ends it and waits for it to exit.
func helper(t *testing.T, mode string, extra ...*os.File) (end func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.ExtraFiles = extra
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended := false
	end = func() {
		if ended {
			return
		}
		ended = true
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper %s: %v", mode, err)
		}
	}
	t.Cleanup(end)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("helper %s: read %q, %v", mode, line, err)
	}
	return end
}

func TestTryLockContendsWithinOneProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	if Held(path) {
		t.Fatal("Held(missing file) = true")
	}
	f, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if !Held(path) {
		t.Error("Held = false while locked")
	}
	if g, err := TryLock(path); !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), path) {
		t.Errorf("TryLock while locked = %v, %v; want ErrHeld naming %s", g, err, path)
	}
	f.Close()
	if Held(path) {
		t.Error("Held = true after Close")
	}
	g, err := TryLock(path)
	if err != nil {
		t.Fatalf("TryLock after Close: %v", err)
	}
	defer g.Close()
	if !Held(path) {
		t.Error("Held = false while TryLock holds it")
	}
}

// Lock and WaitReleased return once the holder lets go (that they wait while it holds
// the lock is TestLockGivesUpWithContext's part), and leave the lock free.
func TestWaitersReturnOnRelease(t *testing.T) {
	ctx := context.Background()
	for name, wait := range map[string]func(path string) error{
		"Lock": func(path string) error {
			g, err := Lock(ctx, path)
			if err == nil {
				g.Close()
			}
			return err
		},
		"WaitReleased": func(path string) error { return WaitReleased(ctx, path) },
	} {
		path := filepath.Join(t.TempDir(), "a.lock")
		f, err := Lock(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		var released atomic.Bool
		got := make(chan error, 1)
		go func() {
			err := wait(path)
			if err == nil && !released.Load() {
				err = errors.New("returned while the lock was held")
			}
			got <- err
		}()
		released.Store(true)
		f.Close()
		if err := <-got; err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		g, err := TryLock(path)
		if err != nil {
			t.Fatalf("TryLock after %s: %v", name, err)
		}
		g.Close()
	}
}

func TestLockGivesUpWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	f, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if g, err := Lock(ctx, path); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Lock(held, expiring ctx) = %v, %v; want DeadlineExceeded naming %s", g, err, path)
	}
	if err := WaitReleased(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReleased(held, expired ctx) = %v; want DeadlineExceeded", err)
	}
	f.Close()
	// The waiter that gave up lets go as soon as the lock is granted to it: a later Lock
	// gets it.
	g, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
}

func TestLockErrorNamesPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "dir", "a.lock")
	if _, err := Lock(context.Background(), path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Lock in a missing directory = %v; want an error naming %s", err, path)
	}
	if _, err := TryLock(path); err == nil || errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), path) {
		t.Errorf("TryLock in a missing directory = %v; want an error naming %s, not ErrHeld", err, path)
	}
	if err := WaitReleased(context.Background(), path); err != nil {
		t.Errorf("WaitReleased(missing file) = %v; want nil", err)
	}
}

func TestHeldByAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	end := helper(t, "lock:"+path)
	if !Held(path) {
		t.Error("Held = false while another process holds it")
	}
	if _, err := TryLock(path); !errors.Is(err, ErrHeld) {
		t.Errorf("TryLock against another process = %v; want ErrHeld", err)
	}
	end() // the kernel drops the lock with the process
	if Held(path) {
		t.Error("Held = true after the holder exited")
	}
	f, err := TryLock(path)
	if err != nil {
		t.Fatalf("TryLock after the holder exited: %v", err)
	}
	f.Close()
}

// A lock handed to a child (as the VM directory's lock is handed to its supervisor) stays
// held after the parent closes its copy, until the child ends.
func TestLockPassedToChild(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	f, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	end := helper(t, "hold", f)
	f.Close()
	if !Held(path) {
		t.Fatal("Held = false while the child still has the descriptor")
	}
	end()
	if Held(path) {
		t.Error("Held = true after the child exited")
	}
}

// Shared holders coexist and keep an exclusive taker out; an exclusive holder keeps them out.
func TestTryLockShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.lock")
	r1, err := TryLockShared(path)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := TryLockShared(path)
	if err != nil {
		t.Fatalf("a second shared lock: %v", err)
	}
	if _, err := TryLock(path); !errors.Is(err, ErrHeld) {
		t.Errorf("TryLock while shared holders exist = %v; want ErrHeld", err)
	}
	r1.Close()
	if _, err := TryLock(path); !errors.Is(err, ErrHeld) {
		t.Errorf("TryLock while one shared holder is left = %v; want ErrHeld", err)
	}
	r2.Close()
	w, err := TryLock(path)
	if err != nil {
		t.Fatalf("TryLock once the shared holders are gone: %v", err)
	}
	if _, err := TryLockShared(path); !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), path) {
		t.Errorf("TryLockShared while locked = %v; want ErrHeld naming %s", err, path)
	}
	w.Close()
}
