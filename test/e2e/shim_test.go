//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/testutil/busyboximage"
)

const (
	shimRuntime = "io.containerd.firegopher.v1"
	// podSubnet is the CNI bridge's, inside the test's network namespace only.
	podSubnet = "10.77.0.0/24"
	shimImage = "docker.io/firegopher/busybox:e2e"
	// shimUserImage is the same layer with "user" as the image's user (ctr run has no --user).
	shimUserImage = "docker.io/firegopher/busybox-user:e2e"
)

// containerd is a private containerd the test started: its sockets, root and state live in
// a short temp dir, nothing else of the host is used.
type containerd struct {
	t        *testing.T
	dir      string
	address  string
	fgState  string // the shim's FIREGOPHER_STATE_DIR
	argv     []string
	cmd      *exec.Cmd
	exited   chan error
	logBytes *bytes.Buffer
}

// startContainerd writes a config.toml that keeps everything in dir, starts Debian's
// containerd with the shim on its PATH, and stops it (and every shim) when the test ends.
// cri enables the CRI plugin with a runtime handler "firegopher" (sandbox image: ours).
func startContainerd(t *testing.T, cri bool) *containerd {
	return startContainerdIn(t, cri, "")
}

// startContainerdIn is startContainerd inside the network namespace netns ("" is this
// one's): a CNI bridge it sets up stays in there.
func startContainerdIn(t *testing.T, cri bool, netns string) *containerd {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Fatal("containerd not found: run scripts/host-packages.sh (Debian package containerd)")
	}
	// Short: unix socket paths have a 108-byte limit, shims' included.
	dir, err := os.MkdirTemp("/tmp", "fgc-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{t: t, dir: dir, address: filepath.Join(dir, "c.sock"), fgState: filepath.Join(dir, "fg"), logBytes: &bytes.Buffer{}}
	// The shim's own state dir (its VMs, its rootfs cache) shares the kernel cache the
	// suite prepared.
	if err := os.MkdirAll(c.fgState, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(stateDir, "cache"), filepath.Join(c.fgState, "cache")); err != nil {
		t.Fatal(err)
	}
	disabled := `"io.containerd.grpc.v1.cri",`
	if cri {
		disabled = ""
	}
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = [
  %[5]s
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  level = "info"

[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.address, c.address+".ttrpc", disabled)
	if cri {
		// Pods on the host network need no CNI; the exec/attach stream server stays on
		// loopback.
		config += fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[1]q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[2]q
    conf_dir = %[3]q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "firegopher"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.firegopher]
    runtime_type = %[4]q
`, shimImage, "/usr/lib/cni", filepath.Join(dir, "cni-conf"), shimRuntime)
		if netns != "" {
			// A bridge inside netns (no masquerade: nothing leaves it), pods on podSubnet.
			conflist := fmt.Sprintf(`{"cniVersion": "0.4.0", "name": "fg-e2e", "plugins": [
  {"type": "bridge", "bridge": "fgcni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}`, podSubnet)
			if err := os.MkdirAll(filepath.Join(dir, "cni-conf"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "cni-conf", "10-fg-e2e.conflist"), []byte(conflist), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := []string{bin, "--config", cfgPath}
	if netns != "" {
		// ip netns exec execs containerd itself: the pid stays containerd's.
		argv = append([]string{"ip", "netns", "exec", netns}, argv...)
	}
	c.argv = argv
	c.start()
	t.Cleanup(c.stop)
	return c
}

// start starts containerd (again) and waits until it answers.
func (c *containerd) start() {
	t := c.t
	t.Helper()
	c.cmd = exec.Command(c.argv[0], c.argv[1:]...)
	c.cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"), "FIREGOPHER_STATE_DIR="+c.fgState)
	c.cmd.Stdout, c.cmd.Stderr = c.logBytes, c.logBytes
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.exited = make(chan error, 1)
	go func(cmd *exec.Cmd, exited chan<- error) { exited <- cmd.Wait() }(c.cmd, c.exited)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r := c.ctrQuiet("version"); r.code == 0 {
			return
		}
		select {
		case err := <-c.exited:
			t.Fatalf("containerd exited: %v\n%s", err, c.logBytes)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer:\n%s", c.logBytes)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// restart stops containerd alone (its shims live on, as in an upgrade) and starts it again.
func (c *containerd) restart() {
	c.t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.t.Fatal("containerd did not stop on SIGTERM")
	}
	c.start()
}

// stop removes every container left, then stops containerd by its pid and removes dir.
func (c *containerd) stop() {
	for _, ns := range []string{"default", "k8s.io"} {
		if r := c.ctrQuiet("-n", ns, "containers", "list", "-q"); r.code == 0 {
			for _, id := range strings.Fields(string(r.stdout)) {
				c.ctrQuiet("-n", ns, "task", "kill", "-s", "KILL", id)
				c.ctrQuiet("-n", ns, "task", "delete", "-f", id)
				c.ctrQuiet("-n", ns, "containers", "delete", id)
			}
		}
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	// Shims live on after containerd by design; ours must not.
	for _, pid := range shimPids(c.dir) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	exec.Command("umount", "-R", filepath.Join(c.dir, "state")).Run()
	if c.t.Failed() {
		c.t.Logf("containerd's log:\n%s", truncateTail(c.logBytes.String(), 6000))
	}
	os.RemoveAll(c.dir)
}

func truncateTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// shimPids are the shim processes serving the containerd whose socket is under dir.
func shimPids(dir string) []int {
	out, _ := exec.Command("pgrep", "-f", "containerd-shim-firegopher-v1 .*-address "+dir).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ctr runs ctr against this containerd, bounded, with stdin (may be nil).
func (c *containerd) ctrIn(stdin io.Reader, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.address}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		c.t.Fatalf("ctr %q did not finish in time; stderr:\n%s", args, errOut.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("ctr %q: %v", args, err)
	}
	return result{out.Bytes(), errOut.Bytes(), code}
}

func (c *containerd) ctr(args ...string) result { c.t.Helper(); return c.ctrIn(nil, args...) }

// ctrQuiet is ctr for setup and cleanup: its failures are the caller's to judge.
func (c *containerd) ctrQuiet(args ...string) result {
	cmd := exec.Command("ctr", append([]string{"--address", c.address}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return result{stdout: out.Bytes(), code: code}
}

// run is `ctr run --rm --runtime firegopher IMAGE ID ARGS...` with extra flags before it.
func (c *containerd) run(stdin io.Reader, flags []string, id string, args ...string) result {
	c.t.Helper()
	argv := append([]string{"run", "--rm", "--runtime", shimRuntime}, flags...)
	return c.ctrIn(stdin, append(append(argv, shimImage, id), args...)...)
}

// waitStopped polls ctr task list until id's task is STOPPED (ctr has no wait), bounded.
func (c *containerd) waitStopped(id string) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := c.ctrQuiet("task", "list")
		for _, line := range strings.Split(string(r.stdout), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == id && f[2] == "STOPPED" {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("task %s did not stop:\n%s", id, r.stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// vmDirs lists the shim's VM directories.
func (c *containerd) vmDirs() []string {
	entries, _ := os.ReadDir(filepath.Join(c.fgState, "vms"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// busyboxImage writes the images the shim tests import (see package busyboximage).
func busyboxImage(t *testing.T, path string) {
	t.Helper()
	if err := busyboximage.Write(path, map[string]string{shimImage: "", shimUserImage: "user"}); err != nil {
		t.Fatal(err)
	}
}

// TestShim runs containers as firegopher VMs through a real containerd (Debian's 1.6) and
// its ctr, as a user of containerd would.
func TestShim(t *testing.T) {
	c := startContainerd(t, false)
	tarPath := filepath.Join(c.dir, "busybox.tar")
	busyboxImage(t, tarPath)
	if r := c.ctr("image", "import", tarPath); r.code != 0 {
		t.Fatalf("ctr image import: %s", r)
	}

	t.Run("stdout stderr and exit code", func(t *testing.T) {
		r := c.run(nil, nil, "out", "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7")
		if r.code != 7 || string(r.stdout) != "to-stdout\n" || !strings.Contains(string(r.stderr), "to-stderr") {
			t.Fatalf("want exit 7, stdout and stderr apart:\n%s", r)
		}
	})

	t.Run("stdin", func(t *testing.T) {
		// ctr run always attaches its stdin (1.6 has no -i); at its EOF ctr closes the task's.
		r := c.run(strings.NewReader("one\ntwo\nthree\n"), nil, "stdin", "sh", "-c", "wc -l; cat /srv/data/hello.txt")
		if r.code != 0 || strings.Fields(string(r.stdout))[0] != "3" || !strings.HasSuffix(string(r.stdout), "\nhello from the image\n") {
			t.Fatalf("stdin:\n%s", r)
		}
	})

	t.Run("env cwd user", func(t *testing.T) {
		argv := []string{"run", "--rm", "--runtime", shimRuntime, "--env", "GREETING=hello world", "--cwd", "/srv/data",
			shimUserImage, "envcwd", "sh", "-c", `echo "$GREETING $FROM_IMAGE"; pwd; id -u; id -g; id -G`}
		r := c.ctr(argv...)
		want := "hello world yes\n/srv/data\n1000\n1000\n1000 2000\n"
		if r.code != 0 || string(r.stdout) != want {
			t.Fatalf("want %q:\n%s", want, r)
		}
	})

	t.Run("VM size from the container's resources", func(t *testing.T) {
		r := c.run(nil, []string{"--memory-limit", strconv.Itoa(384 << 20), "--cpus", "2"}, "size",
			"sh", "-c", "grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo")
		f := strings.Fields(string(r.stdout))
		if r.code != 0 || len(f) < 3 || f[0] != "2" {
			t.Fatalf("want 2 CPUs and about 384 MiB:\n%s", r)
		}
		if kb, _ := strconv.Atoi(f[2]); kb < 250<<10 || kb > 384<<10 {
			t.Fatalf("MemTotal %d kB, want a little under 384 MiB:\n%s", kb, r)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		dir := t.TempDir()
		script := fmt.Sprintf("ctr --address %s run -t --rm --runtime %s --env PS1=guest-prompt: %s tty sh; echo EXIT=$? > %s/exit; sleep 600",
			c.address, shimRuntime, shimImage, dir)
		tm := newTmux(t, 100, 30, "sh -c '"+script+"'")
		tm.waitFor("guest-prompt:", 2*time.Minute)
		tm.keys("stty size", "Enter")
		tm.waitFor("30 100", 30*time.Second)
		if out, err := exec.Command("tmux", "resize-window", "-t", tm.name, "-x", "120", "-y", "40").CombinedOutput(); err != nil {
			t.Fatalf("resize: %v %s", err, out)
		}
		tm.keys("clear; stty size", "Enter")
		tm.waitFor("40 120", 30*time.Second)
		tm.keys("exit 3", "Enter")
		deadline := time.Now().Add(time.Minute)
		for {
			if b, _ := os.ReadFile(filepath.Join(dir, "exit")); len(b) > 0 {
				if strings.TrimSpace(string(b)) != "EXIT=3" {
					t.Fatalf("ctr run -t: %s", b)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ctr run -t did not end after exit 3:\n%s", tm.screen())
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("detached run, exec, kill TERM", func(t *testing.T) {
		r := c.ctr("run", "-d", "--runtime", shimRuntime, shimImage, "bg", "sh", "-c", "echo up > /tmp/up; exec sleep 600")
		if r.code != 0 {
			t.Fatalf("run -d:\n%s", r)
		}
		defer c.ctrQuiet("containers", "delete", "bg")
		if dirs := c.vmDirs(); len(dirs) != 1 {
			t.Fatalf("VM directories: %v, want one", dirs)
		}
		// containerd restarts (an upgrade): the shim and its VM live on, and containerd
		// finds them again.
		c.restart()
		// exec: its own stdout and exit code, the workload's files.
		deadline := time.Now().Add(time.Minute)
		for {
			r = c.ctr("task", "exec", "--exec-id", "e1", "bg", "sh", "-c", "cat /tmp/up && exit 5")
			if r.code == 5 || time.Now().After(deadline) {
				break
			}
		}
		if r.code != 5 || string(r.stdout) != "up\n" {
			t.Fatalf("exec: want stdout up and exit 5:\n%s", r)
		}
		// exec's stdin is its own, closed at the client's EOF.
		if r := c.ctrIn(strings.NewReader("abc"), "task", "exec", "--exec-id", "e2", "bg", "sh", "-c", "cat; exit 3"); r.code != 3 || string(r.stdout) != "abc" {
			t.Fatalf("exec with stdin: want abc and exit 3:\n%s", r)
		}
		// kill --exec-id signals that exec only.
		execCmd := exec.Command("ctr", "--address", c.address, "task", "exec", "--exec-id", "e3", "bg", "sh", "-c", "echo ready; exec sleep 600")
		execOut, err := execCmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := execCmd.Start(); err != nil {
			t.Fatal(err)
		}
		if line, _ := bufio.NewReader(execOut).ReadString('\n'); line != "ready\n" {
			execCmd.Process.Kill()
			t.Fatalf("exec e3 said %q", line)
		}
		if r := c.ctr("task", "kill", "--exec-id", "e3", "-s", "TERM", "bg"); r.code != 0 {
			t.Fatalf("kill --exec-id: %s", r)
		}
		go io.Copy(io.Discard, execOut)
		execDone := make(chan error, 1)
		go func() { execDone <- execCmd.Wait() }()
		select {
		case err := <-execDone:
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 143 {
				t.Fatalf("exec e3 after TERM: %v, want exit 143", err)
			}
		case <-time.After(time.Minute):
			execCmd.Process.Kill()
			t.Fatal("exec e3 did not end after its TERM")
		}
		if r := c.ctr("task", "exec", "--exec-id", "e4", "bg", "true"); r.code != 0 {
			t.Fatalf("the workload did not outlive its exec's TERM: %s", r)
		}
		if r := c.ctr("task", "kill", "-s", "TERM", "bg"); r.code != 0 {
			t.Fatalf("kill: %s", r)
		}
		c.waitStopped("bg")
		// sleep dies of SIGTERM: 128+15.
		// ctr task delete says the code (and exits 0).
		if r := c.ctr("task", "delete", "bg"); r.code != 0 || !strings.Contains(string(r.stderr), "exit code 143") {
			t.Fatalf("task delete after TERM: want exit status 143:\n%s", r)
		}
		if dirs := c.vmDirs(); len(dirs) != 0 {
			t.Fatalf("VM directories left after the task ended: %v", dirs)
		}
	})

	t.Run("shim killed, containerd cleans up", func(t *testing.T) {
		if r := c.ctr("run", "-d", "--runtime", shimRuntime, shimImage, "crash", "sleep", "600"); r.code != 0 {
			t.Fatalf("run -d:\n%s", r)
		}
		defer c.ctrQuiet("containers", "delete", "crash")
		dirs := c.vmDirs()
		if len(dirs) != 1 {
			t.Fatalf("VM directories: %v, want one", dirs)
		}
		vm := dirs[0]
		if len(qemuProcessesOf(t, vm)) == 0 {
			t.Fatalf("no VMM runs for VM %s", vm)
		}
		pids := shimPids(c.dir)
		if len(pids) != 1 {
			t.Fatalf("shim processes: %v, want one", pids)
		}
		if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(t, pids[0])
		// containerd sees its shim go, runs `shim delete` (gc), and records the task's end.
		deadline := time.Now().Add(time.Minute)
		for {
			r := c.ctrQuiet("task", "list")
			gone := !strings.Contains(string(r.stdout), "crash")
			if gone && len(c.vmDirs()) == 0 && len(qemuProcessesOf(t, vm)) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the shim's death: tasks %s; VM dirs %v; VMM %v", r.stdout, c.vmDirs(), qemuProcessesOf(t, vm))
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("a second container of the image reuses its disk", func(t *testing.T) {
		entries, err := os.ReadDir(filepath.Join(c.fgState, "shim", "rootfs"))
		if err != nil {
			t.Fatal(err)
		}
		var images []string
		for _, e := range entries {
			images = append(images, e.Name())
		}
		if len(images) != 1 || !strings.HasSuffix(images[0], ".ext4") {
			t.Fatalf("rootfs cache: %v, want the image's one disk for all its containers", images)
		}
	})
}
