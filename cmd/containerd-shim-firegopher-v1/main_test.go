package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
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

	"github.com/firegopher/firegopher/internal/backends"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
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

func TestMain(m *testing.M) {
	code := m.Run()
	fctest.Cleanup()
	os.Exit(code)
}

// The shim's VMM is the host's default unless FIREGOPHER_VMM names one; the one named is
// built as the CLI builds it (internal/backends): Firecracker jailed, from the state
// directory's release.
func TestChooseVMM(t *testing.T) {
	t.Setenv(backends.FirecrackerVersionEnv, "")
	t.Setenv(backends.CgroupLimitsEnv, "if-available") // this CI host is cgroup-hybrid
	t.Setenv(backends.JailIDsEnv, "")
	t.Setenv("FIREGOPHER_ACCEL", "tcg")
	h, err := backends.NewHost(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	// No release installed: QEMU whether or not KVM works; snapshot templates as for run.
	t.Setenv(backends.VMMEnv, "")
	t.Setenv("FIREGOPHER_NO_SNAPSHOT", "")
	v, err := chooseVMM(h)
	if err != nil || v != (spec.VMM{Backend: vmm.QEMU, Accel: "tcg", Snapshot: true}) {
		t.Errorf("default without a release: %+v %v, want qemu (tcg) with templates", v, err)
	}
	t.Setenv("FIREGOPHER_NO_SNAPSHOT", "1")
	if v, err := chooseVMM(h); err != nil || v.Snapshot {
		t.Errorf("FIREGOPHER_NO_SNAPSHOT=1: %+v %v, want cold boots", v, err)
	}

	t.Setenv(backends.VMMEnv, "bochs")
	if _, err := chooseVMM(h); err == nil || !strings.Contains(err.Error(), backends.VMMEnv) {
		t.Errorf("%s=bochs: %v", backends.VMMEnv, err)
	}

	t.Setenv(backends.VMMEnv, vmm.Firecracker)
	tgz, err := fctest.Tarball(t.TempDir(), "1.16.1")
	if err != nil {
		t.Fatal(err)
	}
	store, err := h.Store()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.ImportFirecracker(tgz, "1.16.1", ""); err != nil {
		t.Fatal(err)
	}
	v, err = chooseVMM(h)
	if err != nil || v.Backend != vmm.Firecracker {
		t.Fatalf("%s=firecracker: %+v %v", backends.VMMEnv, v, err)
	}
	b, err := h.Backend(v)
	if err != nil {
		t.Fatal(err)
	}
	if fc, ok := b.(*firecracker.Backend); !ok || fc.Jailer == nil || fc.Version.String() != "1.16.1" {
		t.Errorf("backend %T %+v, want the installed Firecracker 1.16.1, jailed", b, b)
	}
}
