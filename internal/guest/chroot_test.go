//go:build linux

package guest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Init's stage 2 runs in the process that switched root, without re-executing itself: that
// holds only if a chroot made by one thread moves every thread of a Go program, those that
// ran before it and those made after it. A helper process (this test binary) chroots from
// one locked thread and looks for a file only the new root has from many others.
func TestChrootMovesEveryThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestChrootHelper$")
	cmd.Env = append(os.Environ(), "GUEST_TEST_CHROOT="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}

// TestChrootHelper is the chrooting process of TestChrootMovesEveryThread.
func TestChrootHelper(t *testing.T) {
	root := os.Getenv("GUEST_TEST_CHROOT")
	if root == "" {
		t.Skip("helper of TestChrootMovesEveryThread")
	}
	const threads = 8
	// Threads that exist before the chroot: each stays locked (and so alive) until checked.
	before := make([]chan bool, threads)
	var started, done sync.WaitGroup
	for i := range before {
		before[i] = make(chan bool)
		started.Add(1)
		done.Add(1)
		go func(check chan bool) {
			defer done.Done()
			runtime.LockOSThread()
			started.Done()
			<-check
			check <- inNewRoot()
		}(before[i])
	}
	started.Wait()
	runtime.LockOSThread()
	if err := unix.Chroot(root); err != nil {
		t.Fatal(err)
	}
	runtime.UnlockOSThread()
	for i, check := range before {
		check <- true
		if !<-check {
			t.Errorf("thread %d, running before the chroot, is not in the new root", i)
		}
	}
	done.Wait()
	after := make(chan bool, threads)
	for range threads {
		go func() {
			runtime.LockOSThread() // this goroutine's thread then ends with it: the next needs another
			after <- inNewRoot()
		}()
	}
	for i := range threads {
		if !<-after {
			t.Errorf("thread %d, made after the chroot, is not in the new root", i)
		}
	}
}

// inNewRoot says whether the calling thread sees /marker, which only the new root has.
func inNewRoot() bool {
	_, err := os.Stat("/marker")
	return err == nil
}
