//go:build e2e

// Package e2e boots real VMs with the firegopher binary, as a user would, and checks what
// the user sees: output, exit codes, files left behind. Under QEMU/TCG on hosts without
// usable KVM. It does not skip: a host that cannot run it fails with the reason.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/testutil/seed"
	"github.com/firegopher/firegopher/internal/vmm"
)

var (
	binDir   string // firegopher and firegopher-init, built for this run
	stateDir string
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(pushHelperEnv); spec != "" {
		// Re-executed inside a test's namespace only to push an image there.
		dir, ref, _ := strings.Cut(spec, "=")
		if err := seed.PushLayout(dir, ref); err != nil {
			fmt.Fprintln(os.Stderr, "push:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "\ne2e: CANNOT RUN: %v\n\n", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

func setup() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (VMs need /dev/net/tun, loop devices and the state dir)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return fmt.Errorf("qemu-system-x86_64 not found: run scripts/host-packages.sh (Debian package qemu-system-x86)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	binDir, err = os.MkdirTemp("", "firegopher-e2e-bin-")
	if err != nil {
		return err
	}
	build := exec.Command("make", "-C", root, "build")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("make build: %v\n%s", err, out)
	}
	for _, b := range []string{"firegopher", "firegopher-init", "containerd-shim-firegopher-v1"} {
		if out, err := exec.Command("cp", filepath.Join(root, "bin", b), binDir).CombinedOutput(); err != nil {
			return fmt.Errorf("cp %s: %v %s", b, err, out)
		}
	}
	// The cache is shared with the user's (so the default kernel and image are built once);
	// VMs of this run live in the same state dir and must all be gone at the end.
	stateDir = os.Getenv("FIREGOPHER_STATE_DIR")
	if stateDir == "" {
		stateDir = "/var/lib/firegopher"
	}
	prep := exec.Command(filepath.Join(binDir, "firegopher"), "prepare")
	prep.Stdout, prep.Stderr = os.Stderr, os.Stderr
	if err := prep.Run(); err != nil {
		return fmt.Errorf("firegopher prepare: %v", err)
	}
	return nil
}

type result struct {
	stdout, stderr []byte
	code           int
}

// firegopher runs the CLI to completion (bounded, so a hung VM fails the test instead of CI).
func firegopher(t *testing.T, args ...string) result {
	t.Helper()
	return runFiregopher(t, nil, args...)
}

// runFiregopher runs the CLI behind prefix (e.g. `ip netns exec NS`) to completion, bounded.
func runFiregopher(t *testing.T, prefix []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	argv := append(append(append([]string(nil), prefix...), filepath.Join(binDir, "firegopher")), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("firegopher %q did not finish in time; stderr:\n%s", args, errOut.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("firegopher %q: %v", args, err)
	}
	return result{out.Bytes(), errOut.Bytes(), code}
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %q\nstderr: %s", r.code, truncate(r.stdout), truncate(r.stderr))
}

func truncate(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}

// vmDirs lists the per-VM directories currently in the state dir.
func vmDirs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(stateDir, "vms"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// qemuProcesses lists the pids of the QEMU processes of this test run's state dir (each is
// tagged with its VM's directory), so that VMs of anything else on the machine never count.
func qemuProcesses(t *testing.T) []string {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		if !strings.HasPrefix(filepath.Base(string(bytes.SplitN(cmdline, []byte{0}, 2)[0])), "qemu-system-") {
			continue
		}
		environ, _ := os.ReadFile(filepath.Join("/proc", pid, "environ"))
		for _, kv := range bytes.Split(environ, []byte{0}) {
			if dir, ok := strings.CutPrefix(string(kv), vmm.ProcessTagEnv+"="); ok && strings.HasPrefix(dir, stateDir+"/") {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
