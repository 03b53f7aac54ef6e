package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/backends"
	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/vmm/firecracker"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

// fcCLI is `firegopher` (this test binary as its main, asCLIEnv) on a state directory of
// its own with a fctest release installed through `firecracker install`.
type fcCLI struct {
	t              *testing.T
	stateDir       string
	ids            jail.Range
	env            []string
	kernel, rootfs string
}

func newFCCLI(t *testing.T, version string) *fcCLI {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the jailer chroots, setuids and mknods")
	}
	bb, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		bb, err = os.ReadFile("/bin/busybox")
	}
	if err != nil {
		t.Skip("no busybox to give the jailed guest a shell")
	}
	// Short: the jail's socket paths (<state>/jail/firecracker/<id>/root/v.sock_1024) must
	// fit in sun_path.
	dir, err := os.MkdirTemp("", "fgc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	files := t.TempDir()
	c := &fcCLI{t: t, stateDir: dir,
		// A range of the test's own: runs side by side never share a uid.
		ids: jail.Range{First: 1_970_000_000 + rand.IntN(1_000_000)*100, Count: 100},
		// An ELF "vmlinux" taking virtio_mmio.device= (a Firecracker guest-config kernel):
		// every release can boot it, and the fake reads nothing else from it.
		kernel: filepath.Join(files, "vmlinux"),
		// The root disk the fake guest unpacks into its empty jail.
		rootfs: filepath.Join(files, "rootfs.tar"),
	}
	if err := os.WriteFile(c.kernel, []byte("\x7fELF fake vmlinux\x00virtio_mmio.device\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	for _, applet := range []string{"sh", "sleep", "echo"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox"})
	}
	tw.Close()
	if err := os.WriteFile(c.rootfs, tb.Bytes(), 0o444); err != nil {
		t.Fatal(err)
	}
	// The fake guest plays init from the initrd's config: the binary is never run.
	initBin := filepath.Join(files, "firegopher-init")
	if err := os.WriteFile(initBin, []byte("init"), 0o755); err != nil {
		t.Fatal(err)
	}
	c.env = append(os.Environ(), asCLIEnv+"=1", "FIREGOPHER_STATE_DIR="+dir, "FIREGOPHER_INIT="+initBin,
		backends.FirecrackerVersionEnv+"=", backends.VMMEnv+"=",
		// This CI host is cgroup-hybrid: no v2 limits to be had.
		backends.CgroupLimitsEnv+"=if-available",
		fmt.Sprintf("%s=%d:%d", backends.JailIDsEnv, c.ids.First, c.ids.Count))
	if out := c.ok("firecracker", "install", "--version", version, "--from", releaseTarball(t, version)); !strings.Contains(out, "firecracker/v"+version) {
		t.Fatalf("install: %q", out)
	}
	if out := c.ok("firecracker", "ls"); !strings.Contains(out, version) {
		t.Fatalf("ls: %q", out)
	}
	return c
}

// run runs firegopher args and returns its stdout, stderr and exit code.
func (c *fcCLI) run(args ...string) (string, string, int) {
	c.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0:
		return stdout.String(), stderr.String(), exitErr.ExitCode()
	}
	c.t.Fatalf("firegopher %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	return "", "", 0
}

// ok runs firegopher args, which must succeed, and returns its stdout.
func (c *fcCLI) ok(args ...string) string {
	c.t.Helper()
	stdout, stderr, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("firegopher %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// runArgs is `run --vmm firecracker` of the test's kernel and root disk, then extra.
func (c *fcCLI) runArgs(extra ...string) []string {
	return append([]string{"run", "--vmm", "firecracker", "--memory", "128M", "--kernel", c.kernel, "--image", c.rootfs}, extra...)
}

// waitLogs polls `logs id` (bounded) until it shows s.
func (c *fcCLI) waitLogs(id, s string) {
	c.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if strings.Contains(c.ok("logs", id), s) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("logs %s never showed %q", id, s)
		}
	}
}

// assertNoJails: no chroot, owner or jailed process of this state directory is left.
func (c *fcCLI) assertNoJails() {
	c.t.Helper()
	if ents, _ := os.ReadDir(filepath.Join(c.stateDir, "jail", jail.ExecName)); len(ents) > 0 {
		c.t.Errorf("chroots left: %d", len(ents))
	}
	owners, err := jail.OpenAllocator(filepath.Join(c.stateDir, "jail.db"), c.ids)
	if err != nil {
		c.t.Fatal(err)
	}
	if list, err := owners.List(); err != nil || len(list) > 0 {
		c.t.Errorf("jail owners left: %v %v", list, err)
	}
	for uid := c.ids.First; uid < c.ids.First+c.ids.Count; uid++ {
		if pids, _ := jail.Processes("/proc", jail.Owner{UID: uid, GID: uid}); len(pids) > 0 {
			c.t.Errorf("processes of jail uid %d left: %v", uid, pids)
		}
	}
}

// TestCLIFirecracker drives `firegopher run --vmm firecracker` and the commands around it as
// a user would, against the doubles of each release installed with `firecracker install`.
func TestCLIFirecracker(t *testing.T) {
	for _, v := range fctest.Versions {
		t.Run(fctest.SubtestName(v), func(t *testing.T) {
			c := newFCCLI(t, v)
			defer func() {
				// A test that fails midway leaves nothing running behind it.
				if t.Failed() {
					if ids := c.runningIDs(); len(ids) > 0 {
						c.run(append([]string{"rm", "-f", "--"}, ids...)...)
					}
					c.run("gc")
				}
			}()

			// Foreground: the workload's output and exit code are ours; the VM is removed.
			stdout, stderr, code := c.run(c.runArgs("--", "sh", "-c", "echo out; echo err >&2; exit 3")...)
			if code != 3 || stdout != "out\n" || !strings.Contains(stderr, "err\n") {
				t.Fatalf("run: exit %d stdout %q stderr %q", code, stdout, stderr)
			}
			if out := c.ok("ps", "-a"); strings.Count(out, "\n") != 1 {
				t.Errorf("a foreground run leaves its VM behind:\n%s", out)
			}
			c.assertNoJails()

			// Detached: ps, logs, stop, wait, rm.
			id := strings.TrimSpace(c.ok(c.runArgs("-d", "--name", "web", "--", "sh", "-c", "echo hello; exec sleep 100")...))
			c.waitLogs(id, "hello\n")
			if out := c.ok("ps"); !strings.Contains(out, id) || !strings.Contains(out, "web") || !strings.Contains(out, "running") {
				t.Errorf("ps:\n%s", out)
			}
			// The VMM is Firecracker, jailed under the state directory.
			var rec struct {
				Backend string `json:"backend"`
				VMMPID  int    `json:"vmm_pid"`
			}
			if err := json.Unmarshal([]byte(c.ok("inspect", id)), &rec); err != nil {
				t.Fatal(err)
			}
			root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", rec.VMMPID))
			if rec.Backend != "firecracker" || err != nil || root != filepath.Join(c.stateDir, "jail", jail.ExecName, id, "root") {
				t.Errorf("backend %q, VMM %d in root %q (%v): want Firecracker in its jail", rec.Backend, rec.VMMPID, root, err)
			}
			if fi, err := os.Stat(fmt.Sprintf("/proc/%d", rec.VMMPID)); err == nil {
				if uid := int(fi.Sys().(*syscall.Stat_t).Uid); uid < c.ids.First || uid >= c.ids.First+c.ids.Count {
					t.Errorf("the VMM runs as uid %d, want one of %s's range %d+%d", uid, backends.JailIDsEnv, c.ids.First, c.ids.Count)
				}
			}
			if out := c.ok("stop", "-t", "5", "web"); strings.TrimSpace(out) != id {
				t.Errorf("stop: %q", out)
			}
			if out := strings.TrimSpace(c.ok("wait", id)); out != "143" {
				t.Errorf("wait after stop: %q, want 143 (SIGTERM)", out)
			}
			if out := c.ok("ps", "-a"); !strings.Contains(out, "exited (143)") {
				t.Errorf("ps -a after stop:\n%s", out)
			}
			vmDir := filepath.Join(c.stateDir, "vms", id)
			// Cold-booted or restored from a template, Firecracker's log reaches the VM dir.
			if b, _ := os.ReadFile(filepath.Join(vmDir, supervisor.ConsoleLog+firecracker.LogSuffix)); !bytes.Contains(b, []byte("The API server received a Put request")) {
				t.Errorf("Firecracker's log in the VM directory: %q", b)
			}
			if b, _ := os.ReadFile(filepath.Join(vmDir, supervisor.ConsoleLog+firecracker.MetricsSuffix)); !bytes.Contains(b, []byte(`"utc_timestamp_ms"`)) {
				t.Errorf("Firecracker's metrics in the VM directory: %q", b)
			}
			c.assertNoJails()
			c.ok("rm", id)
			if _, err := os.Stat(vmDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("rm left %s (%v)", vmDir, err)
			}

			// kill: SIGKILL to the workload, through init.
			id = strings.TrimSpace(c.ok(c.runArgs("-d", "--", "sh", "-c", "echo hello; exec sleep 100")...))
			c.waitLogs(id, "hello\n")
			c.ok("kill", id)
			if out := strings.TrimSpace(c.ok("wait", id)); out != "137" {
				t.Errorf("wait after kill: %q, want 137 (SIGKILL)", out)
			}
			c.ok("rm", id)
			c.ok("gc")
			c.assertNoJails()
			if out := c.ok("ps", "-a"); strings.Count(out, "\n") != 1 {
				t.Errorf("VMs left:\n%s", out)
			}
		})
	}
}

// runningIDs are the ids `ps` lists.
func (c *fcCLI) runningIDs() []string {
	var ids []string
	stdout, _, _ := c.run("ps", "-a")
	for i, line := range strings.Split(stdout, "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 0 {
			ids = append(ids, f[0])
		}
	}
	return ids
}
