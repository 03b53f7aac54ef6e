package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/ttrpc"
)

// The start action prints a plain socket address (what containerd 1.6 and CRI-O read, not
// containerd/v2's JSON), and the server it started answers there and shuts down when told.
func TestStartPrintsAPlainAddressAndServes(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "containerd-shim-firegopher-v1")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// firegopher-init is looked for beside the binary: any regular file will do here.
	os.WriteFile(filepath.Join(dir, "firegopher-init"), []byte("not run"), 0o755)
	bundleDir := filepath.Join(dir, "bundle")
	os.Mkdir(bundleDir, 0o755)
	os.WriteFile(filepath.Join(bundleDir, "config.json"), []byte(`{"ociVersion":"1.0.2","process":{"args":["true"],"cwd":"/"}}`), 0o644)
	// The serving shim logs into the bundle's "log" FIFO, which containerd reads.
	logFIFO := filepath.Join(bundleDir, "log")
	if err := syscall.Mkfifo(logFIFO, 0o600); err != nil {
		t.Fatal(err)
	}
	logR, err := os.OpenFile(logFIFO, os.O_RDWR, 0) // RDWR: never blocks, never sees EOF
	if err != nil {
		t.Fatal(err)
	}
	defer logR.Close()
	go io.Copy(io.Discard, logR)
	// containerd's own address: the socket path is derived from it (nothing listens there).
	containerdAddr := filepath.Join(dir, "c.sock")
	start := exec.Command(bin, "-namespace", "testns", "-address", containerdAddr, "-id", "t1", "start")
	start.Dir = bundleDir
	start.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+filepath.Join(dir, "state"))
	var stdout, stderr bytes.Buffer
	start.Stdout, start.Stderr = &stdout, &stderr
	if err := start.Run(); err != nil {
		t.Fatalf("start: %v\n%s", err, stderr.String())
	}
	address := stdout.String()
	if !strings.HasPrefix(address, "unix://") || strings.ContainsAny(address, "{\n ") {
		t.Fatalf("start printed %q, want a plain unix:// address", address)
	}
	conn, err := net.Dial("unix", strings.TrimPrefix(address, "unix://"))
	if err != nil {
		t.Fatalf("dial %s: %v", address, err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	tasks := taskAPI.NewTaskClient(client)
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "testns"), 30*time.Second)
	defer cancel()
	c, err := tasks.Connect(ctx, &taskAPI.ConnectRequest{ID: "t1"})
	if err != nil || c.ShimPid == 0 {
		t.Fatalf("connect: %+v %v", c, err)
	}
	tasks.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "t1"}) // the server may go before it answers
	deadline := time.Now().Add(30 * time.Second)
	for {
		if !alive(int(c.ShimPid)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shim server (pid %d) did not exit after Shutdown", c.ShimPid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(strings.TrimPrefix(address, "unix://")); err == nil {
		t.Error("the shim's socket outlived it")
	}
}

// alive says whether pid runs (a zombie does not).
func alive(pid int) bool {
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil && strings.Contains(string(b), ") Z ") {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}
