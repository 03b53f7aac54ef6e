//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestRunTrueExitsZero(t *testing.T) {
	if r := firegopher(t, "run", "--", "true"); r.code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
}

func TestRunPassesTheExitCodeThrough(t *testing.T) {
	if r := firegopher(t, "run", "--", "sh", "-c", "exit 7"); r.code != 7 {
		t.Fatalf("want exit 7:\n%s", r)
	}
}

func TestRunMissingCommandIs127(t *testing.T) {
	r := firegopher(t, "run", "--", "no-such-command")
	if r.code != 127 || !bytes.Contains(r.stderr, []byte("no-such-command: command not found")) {
		t.Fatalf("want exit 127 and a clear message:\n%s", r)
	}
}

func TestRunPython(t *testing.T) {
	r := firegopher(t, "run", "--", "python3", "-c", `print("hello from a microVM")`)
	if r.code != 0 || string(r.stdout) != "hello from a microVM\n" {
		t.Fatalf("want python's greeting on stdout:\n%s", r)
	}
}

func TestRunOutputArrivesIntact(t *testing.T) {
	// 1 MiB on stdout, 256 KiB on stderr, every byte value, interleaved writes.
	script := `import sys
out = bytes(range(256)) * 4096
err = bytes(reversed(range(256))) * 1024
for i in range(0, len(out), 65536):
    sys.stdout.buffer.write(out[i:i+65536]); sys.stdout.flush()
    sys.stderr.buffer.write(err[i//4:i//4+16384]); sys.stderr.flush()
`
	r := firegopher(t, "run", "--", "python3", "-c", script)
	wantOut := bytes.Repeat(seq(false), 4096)
	wantErr := bytes.Repeat(seq(true), 1024)
	if r.code != 0 || !bytes.Equal(r.stdout, wantOut) || !bytes.Equal(r.stderr, wantErr) {
		t.Fatalf("exit %d; stdout %d bytes (equal: %v), stderr %d bytes (equal: %v); stderr starts %q",
			r.code, len(r.stdout), bytes.Equal(r.stdout, wantOut), len(r.stderr), bytes.Equal(r.stderr, wantErr), truncate(r.stderr))
	}
}

func seq(reversed bool) []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
		if reversed {
			b[i] = byte(255 - i)
		}
	}
	return b
}

func TestRunEnvAndWorkdir(t *testing.T) {
	r := firegopher(t, "run", "--env", "GREETING=hi there", "--workdir", "/usr/share", "--", "sh", "-c", `echo "$GREETING"; pwd; hostname`)
	lines := strings.Split(strings.TrimSpace(string(r.stdout)), "\n")
	if r.code != 0 || len(lines) != 3 || lines[0] != "hi there" || lines[1] != "/usr/share" || len(lines[2]) != 12 {
		t.Fatalf("want the env value, the workdir and a 12-digit VM id as hostname:\n%s", r)
	}
}

func TestConcurrentVMsSeeOnlyTheirOwnWrites(t *testing.T) {
	rootfs := defaultRootfs(t)
	before := fileDigest(t, rootfs)
	const n = 3
	var wg sync.WaitGroup
	results := make([]result, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = firegopher(t, "run", "--", "sh", "-c", fmt.Sprintf("echo %d > /marker-%d && sync && ls / | grep marker", i, i))
		}(i)
	}
	wg.Wait()
	for i, r := range results {
		if want := fmt.Sprintf("marker-%d\n", i); r.code != 0 || string(r.stdout) != want {
			t.Errorf("VM %d: want only its own %q:\n%s", i, want, r)
		}
	}
	if after := fileDigest(t, rootfs); after != before {
		t.Fatalf("the cached image changed: %s -> %s", before, after)
	}
	// A fourth VM from the same image starts clean.
	if r := firegopher(t, "run", "--", "sh", "-c", "ls / | grep -c marker"); strings.TrimSpace(string(r.stdout)) != "0" {
		t.Fatalf("writes of earlier VMs leaked into a new one:\n%s", r)
	}
}

// defaultRootfs follows the cache's refs to the default image's ext4 file.
func defaultRootfs(t *testing.T) string {
	t.Helper()
	cache := filepath.Join(stateDir, "cache")
	manifest := readRef(t, cache, "image/default")
	b, err := os.ReadFile(blobPath(cache, manifest))
	if err != nil {
		t.Fatal(err)
	}
	var im struct{ Rootfs string }
	if err := jsonUnmarshal(b, &im); err != nil {
		t.Fatal(err)
	}
	return blobPath(cache, im.Rootfs)
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func TestBadInputIsRefusedWithoutLeftovers(t *testing.T) {
	before := vmDirs(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--memory", "12XB", "--", "true"}, "--memory"},
		{[]string{"run", "--image", "no-such-image", "--", "true"}, "--image: no-such-image"},
		{[]string{"run", "--image", "/no/such/file.ext4", "--", "true"}, "--image: /no/such/file.ext4: no such file"},
		{[]string{"run", "--cpus", "0", "--", "true"}, "--cpus"},
		{[]string{"run"}, "no command"},
	} {
		r := firegopher(t, tc.args...)
		lines := strings.Split(strings.TrimSpace(string(r.stderr)), "\n")
		if r.code != 125 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%q: want exit 125 and one line naming %q:\n%s", tc.args, tc.want, r)
		}
	}
	if after := vmDirs(t); len(after) != len(before) {
		t.Fatalf("bad input left VM directories: %v", after)
	}
}

func TestMissingQemuNamesThePackage(t *testing.T) {
	// A PATH without QEMU: the error must say which package to install.
	cmd := exec.Command(filepath.Join(binDir, "firegopher"), "run", "--", "true")
	cmd.Env = []string{"PATH=/nonexistent", "FIREGOPHER_STATE_DIR=" + stateDir}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 125 || !strings.Contains(string(out), "qemu-system-x86") {
		t.Fatalf("want exit 125 naming qemu-system-x86: %v %s", err, out)
	}
}

func TestInterruptStopsTheVMAndLeavesNothing(t *testing.T) {
	before := vmDirs(t)
	cmd := exec.Command(filepath.Join(binDir, "firegopher"), "run", "--", "sh", "-c", "echo ready; exec sleep 600")
	cmd.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		t.Fatalf("workload did not start: %q %v\n%s", line, err, stderr.String())
	}
	if len(qemuProcesses(t)) == 0 {
		t.Fatal("no QEMU process while the workload runs")
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatal("firegopher did not stop within a minute of Ctrl-C")
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("want exit 130 after Ctrl-C, got %v\n%s", err, stderr.String())
	}
	if procs := qemuProcesses(t); len(procs) != 0 {
		t.Fatalf("QEMU still running after Ctrl-C: %v", procs)
	}
	if after := vmDirs(t); len(after) != len(before) {
		t.Fatalf("Ctrl-C left VM directories: %v", after)
	}
}

func TestExitBySignalIs128PlusN(t *testing.T) {
	r := firegopher(t, "run", "--", "sh", "-c", "kill -KILL $$")
	if r.code != 128+9 {
		t.Fatalf("want 137:\n%s", r)
	}
}
