//go:build linux

package guest

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lockedBuffer is written by two copier goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testReaper makes this process reap as PID 1 does, for one test: orphans of the workloads
// under test reparent to it. Its wait4(-1) would take the status of any other child of the
// test binary, so it lives only as long as the test (and tests here do not run in parallel).
func testReaper(t *testing.T) *Reaper {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	r := NewReaper()
	t.Cleanup(func() {
		r.Close()
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	})
	return r
}

func run(t *testing.T, r *Reaper, argv ...string) (code int, signal int, stdout, stderr string) {
	t.Helper()
	var out, errOut lockedBuffer
	w := &Workload{
		Argv: argv, Env: []string{"HOME=/"}, Dir: t.TempDir(),
		Stdout: &out, Stderr: &errOut, Grace: 5 * time.Second, Reaper: r,
		KillRest: KillGroup, WaitAllGone: true,
	}
	e := w.Run()
	return e.Code, e.Signal, out.String(), errOut.String()
}

func TestWorkloadExitCodesFollowTheShell(t *testing.T) {
	r := testReaper(t)
	for _, tc := range []struct {
		argv       []string
		code, sig  int
		stderrHave string
	}{
		{[]string{"true"}, 0, 0, ""},
		{[]string{"sh", "-c", "exit 7"}, 7, 0, ""},
		{[]string{"sh", "-c", "kill -TERM $$"}, 128 + 15, 15, ""},
		{[]string{"no-such-command-xyz"}, 127, 0, "no-such-command-xyz: command not found"},
		{[]string{notExecutable(t)}, 126, 0, "permission denied"},
	} {
		code, sig, _, stderr := run(t, r, tc.argv...)
		if code != tc.code || sig != tc.sig || !strings.Contains(stderr, tc.stderrHave) {
			t.Errorf("%q: code %d signal %d stderr %q; want %d, %d, %q", tc.argv, code, sig, stderr, tc.code, tc.sig, tc.stderrHave)
		}
	}
}

func TestWorkloadStreamsBothOutputs(t *testing.T) {
	code, _, out, errOut := run(t, testReaper(t), "sh", "-c", "echo out; echo err >&2; head -c 100000 /dev/zero | tr '\\0' x")
	if code != 0 || errOut != "err\n" || !strings.HasPrefix(out, "out\n") || len(out) != 4+100000 {
		t.Fatalf("code %d stdout %d bytes stderr %q", code, len(out), errOut)
	}
}

func TestWorkloadLeftoversAreTerminatedAndReaped(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	// The background child keeps stdout open; Run must still return, and the child must be gone.
	code, _, out, _ := run(t, testReaper(t), "sh", "-c", "sleep 600 & echo $! > "+pidFile+"; echo started")
	if code != 0 || out != "started\n" {
		t.Fatalf("code %d out %q", code, out)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(pid, 0); err != unix.ESRCH {
		t.Fatalf("background child %d still exists (kill 0: %v): not terminated or not reaped", pid, err)
	}
}

func TestWorkloadForwardsSignals(t *testing.T) {
	var out lockedBuffer
	sigs := make(chan unix.Signal, 1)
	w := &Workload{
		Argv:   []string{"sh", "-c", "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.01; done"},
		Stdout: &out, Stderr: &out, Signals: sigs, Grace: time.Second,
		KillRest: KillGroup, // no Reaper: waited for by pid
	}
	done := make(chan int)
	go func() { done <- w.Run().Code }()
	for !strings.Contains(out.String(), "ready") {
		time.Sleep(time.Millisecond) // polling the workload's own output, not a timing guess
	}
	sigs <- unix.SIGUSR1
	if code := <-done; code != 3 || !strings.Contains(out.String(), "got-usr1") {
		t.Fatalf("code %d output %q", code, out.String())
	}
}

func TestLookPathUsesTheWorkloadsPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p, _, ok := lookPath("tool", []string{"PATH=/nonexistent:" + dir}, "/"); !ok || p != filepath.Join(dir, "tool") {
		t.Fatalf("got %q %v", p, ok)
	}
	if _, e, ok := lookPath("tool", []string{"PATH=/nonexistent"}, "/"); ok || e.Code != 127 {
		t.Fatalf("found tool outside PATH: %+v", e)
	}
	if _, _, ok := lookPath("./tool", nil, dir); !ok {
		t.Fatal("relative path not resolved against the working directory")
	}
}

func notExecutable(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// no_new_privs is per thread: it must be on the thread that forks the workload, and on no
// thread that forks anything else later. 20 of 20 runs, interleaved with runs without it.
func TestWorkloadNoNewPrivsReachesTheWorkloadAndOnlyIt(t *testing.T) {
	runtime.LockOSThread()
	nnp, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	if nnp == 1 {
		t.Skip("SKIPPED: this test process already runs with no_new_privs (set by whatever started it), so the flag cannot be seen to be set or not by the code under test")
	}
	status := func(noNewPrivs bool) string {
		var out lockedBuffer
		w := &Workload{Argv: []string{"grep", "NoNewPrivs", "/proc/self/status"}, Dir: "/",
			Stdout: &out, Stderr: &out, Grace: time.Second, KillRest: KillGroup, NoNewPrivs: noNewPrivs}
		if e := w.Run(); e.Code != 0 {
			t.Fatalf("grep: %+v %s", e, out.String())
		}
		return out.String()
	}
	for i := 0; i < 20; i++ {
		if got := status(true); got != "NoNewPrivs:\t1\n" {
			t.Fatalf("run %d with NoNewPrivs: %q", i, got)
		}
		if got := status(false); got != "NoNewPrivs:\t0\n" {
			t.Fatalf("run %d without NoNewPrivs: %q", i, got)
		}
	}
}
