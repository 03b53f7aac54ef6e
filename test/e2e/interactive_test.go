//go:build e2e

package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunStdin(t *testing.T) {
	r := runWithStdin(t, strings.NewReader("hi"), "run", "-i", "--", "cat")
	if r.code != 0 || string(r.stdout) != "hi" {
		t.Fatalf("printf hi | run -i -- cat: %s", r)
	}
	// Without -i the workload's stdin is /dev/null whatever ours is.
	r = runWithStdin(t, strings.NewReader("hi"), "run", "--", "cat")
	if r.code != 0 || len(r.stdout) != 0 {
		t.Fatalf("run -- cat without -i: %s", r)
	}
}

func TestRunStdin100MiB(t *testing.T) {
	data := make([]byte, 100<<20)
	rand.Read(data)
	sum := sha256.Sum256(data)
	start := time.Now()
	r := runWithStdin(t, bytes.NewReader(data), "run", "-i", "--memory", "256M", "--", "sha256sum")
	if r.code != 0 || !strings.HasPrefix(string(r.stdout), hex.EncodeToString(sum[:])) {
		t.Fatalf("100 MiB through run -i -- sha256sum: %s", r)
	}
	t.Logf("100 MiB of stdin in %s (boot included)", time.Since(start).Round(time.Millisecond))
}

func runWithStdin(t *testing.T, stdin interface{ Read([]byte) (int, error) }, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "firegopher"), args...)
	cmd.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir)
	cmd.Stdin = stdin
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return result{out.Bytes(), errOut.Bytes(), code}
	case <-time.After(3 * time.Minute):
		cmd.Process.Signal(syscall.SIGTERM)
		<-done
		t.Fatalf("firegopher %q did not finish in time; stderr:\n%s", args, errOut.String())
		return result{}
	}
}

// tmux is one terminal the test types into and reads, as a person would.
type tmux struct {
	t    *testing.T
	name string
}

func newTmux(t *testing.T, cols, rows int, shellCmd string) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux not found: install the Debian package tmux")
	}
	name := fmt.Sprintf("fg-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	cmd := exec.Command("tmux", "new-session", "-d", "-s", name, "-x", fmt.Sprint(cols), "-y", fmt.Sprint(rows), shellCmd)
	cmd.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir, "TERM=xterm-256color", "PATH="+binDir+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	tm := &tmux{t: t, name: name}
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", name).Run() })
	return tm
}

func (tm *tmux) keys(keys ...string) {
	tm.t.Helper()
	if out, err := exec.Command("tmux", append([]string{"send-keys", "-t", tm.name}, keys...)...).CombinedOutput(); err != nil {
		tm.t.Fatalf("send-keys: %v %s", err, out)
	}
}

func (tm *tmux) screen() string {
	out, _ := exec.Command("tmux", "capture-pane", "-p", "-t", tm.name).Output()
	return string(out)
}

// waitFor polls the screen until it contains s (a terminal has no other signal), bounded.
func (tm *tmux) waitFor(s string, d time.Duration) {
	tm.t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(tm.screen(), s) {
		if time.Now().After(deadline) {
			tm.t.Fatalf("the terminal never showed %q; it shows:\n%s", s, tm.screen())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRunInteractiveTerminal(t *testing.T) {
	dir := t.TempDir()
	script := fmt.Sprintf(`stty -a > %[1]s/before; firegopher run -it -e PS1=guest-prompt: -- sh; echo "EXIT=$?" > %[1]s/exit; stty -a > %[1]s/after; sleep 600`, dir)
	tm := newTmux(t, 100, 30, "sh -c '"+script+"'")
	tm.waitFor("guest-prompt:", 2*time.Minute) // the guest shell's prompt
	tm.keys("echo hel''lo-from-the-guest", "Enter")
	tm.waitFor("hello-from-the-guest", 30*time.Second)
	tm.keys("stty size", "Enter")
	tm.waitFor("30 100", 30*time.Second)
	if out, err := exec.Command("tmux", "resize-window", "-t", tm.name, "-x", "120", "-y", "40").CombinedOutput(); err != nil {
		t.Fatalf("resize: %v %s", err, out)
	}
	tm.keys("clear; stty size", "Enter")
	tm.waitFor("40 120", 30*time.Second)
	// Ctrl-C reaches the guest's foreground process through its terminal, not the VM.
	tm.keys("clear; sleep 1000", "Enter")
	tm.keys("C-c")
	tm.keys("echo still-here", "Enter")
	tm.waitFor("still-here", 30*time.Second)
	tm.keys("exit 3", "Enter")
	deadline := time.Now().Add(time.Minute)
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "exit")); err == nil && len(b) > 0 {
			if strings.TrimSpace(string(b)) != "EXIT=3" {
				t.Fatalf("exit code: %s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run -it did not end after exit 3:\n%s", tm.screen())
		}
		time.Sleep(100 * time.Millisecond)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "before"))
	var after []byte
	for deadline := time.Now().Add(10 * time.Second); len(after) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		after, _ = os.ReadFile(filepath.Join(dir, "after"))
	}
	// The size changed on purpose; every mode flag must be as it was.
	if modes(before) != modes(after) {
		t.Fatalf("the host terminal is not restored:\nbefore: %s\nafter:  %s", before, after)
	}
}

// modes drops stty -a's first line (speed and size) and keeps the flags.
func modes(stty []byte) string {
	lines := strings.SplitN(string(stty), "\n", 2)
	if len(lines) < 2 {
		return ""
	}
	return lines[1]
}

func TestExecAndAttachInATerminal(t *testing.T) {
	id := detached(t, "-it", "--name", "attach-me", "--", "sh", "-c", "echo ready; while read line; do echo got:$line; done")
	waitForOutput(t, id, "ready")
	tm := newTmux(t, 100, 30, "sh -c 'firegopher attach attach-me; echo ATTACH-ENDED; sleep 600'")
	// Typed until attached: what arrives before attach reads it waits in the terminal.
	for i := 0; !strings.Contains(tm.screen(), "got:ping"); i++ {
		if i > 300 {
			t.Fatalf("attach never passed input through:\n%s", tm.screen())
		}
		tm.keys("ping", "Enter")
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(tm.screen(), "ready") {
		t.Fatalf("attach replayed old output (logs does that):\n%s", tm.screen())
	}
	tm.keys("C-p", "C-q")
	tm.waitFor("ATTACH-ENDED", 30*time.Second)
	if r := firegopher(t, "exec", id, "--", "true"); r.code != 0 {
		t.Fatalf("the VM did not survive a detach: %s", r)
	}
	// exec -it: a shell of its own beside the workload.
	tm2 := newTmux(t, 90, 25, "sh -c 'firegopher exec -it -e PS1=exec-prompt: attach-me sh; echo EXEC-ENDED:$?; sleep 600'")
	tm2.waitFor("exec-prompt:", time.Minute)
	tm2.keys("stty size; exit 4", "Enter")
	tm2.waitFor("25 90", 30*time.Second)
	tm2.waitFor("EXEC-ENDED:4", 30*time.Second)
}

func TestCpRoundTrip(t *testing.T) {
	id := detached(t, "--", "sh", "-c", "echo ready; exec sleep 300")
	waitForOutput(t, id, "ready")
	src := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(src, "bin"), 0o750)
	os.WriteFile(filepath.Join(src, "bin", "tool"), []byte("#!/bin/sh\necho tool\n"), 0o755)
	os.WriteFile(filepath.Join(src, "secret"), []byte("s3cret"), 0o600)
	os.Symlink("bin/tool", filepath.Join(src, "link"))
	os.Lchown(filepath.Join(src, "secret"), 4242, 4343)
	if r := firegopher(t, "cp", src, id+":/tmp"); r.code != 0 {
		t.Fatalf("cp in: %s", r)
	}
	if r := firegopher(t, "exec", id, "--", "sh", "-c", "/tmp/tree/link; stat -c '%a %u:%g' /tmp/tree/secret"); r.code != 0 || string(r.stdout) != "tool\n600 4242:4343\n" {
		t.Fatalf("in the guest: %s", r)
	}
	back := filepath.Join(t.TempDir(), "back")
	if r := firegopher(t, "cp", id+":/tmp/tree", back); r.code != 0 {
		t.Fatalf("cp out: %s", r)
	}
	for _, rel := range []string{"bin", "bin/tool", "secret", "link"} {
		a, _ := os.Lstat(filepath.Join(src, rel))
		b, err := os.Lstat(filepath.Join(back, rel))
		if err != nil || a.Mode() != b.Mode() {
			t.Errorf("%s: mode %v vs %v (%v)", rel, a.Mode(), b, err)
		}
	}
	if l, _ := os.Readlink(filepath.Join(back, "link")); l != "bin/tool" {
		t.Errorf("symlink came back as %q", l)
	}
	fi, _ := os.Lstat(filepath.Join(back, "secret"))
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 4242 || st.Gid != 4343 {
		t.Errorf("owner came back as %d:%d", st.Uid, st.Gid)
	}
	if r := firegopher(t, "cp", id+":tmp/x", back); r.code != 125 || !strings.Contains(string(r.stderr), "absolute") {
		t.Errorf("a relative guest path: %s", r)
	}
}
