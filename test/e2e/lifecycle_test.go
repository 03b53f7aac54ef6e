//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// detached starts a VM with run -d and registers its removal.
func detached(t *testing.T, args ...string) string {
	t.Helper()
	r := firegopher(t, append([]string{"run", "-d"}, args...)...)
	id := strings.TrimSpace(string(r.stdout))
	if r.code != 0 || len(id) != 12 {
		t.Fatalf("run -d: %s", r)
	}
	t.Cleanup(func() { firegopher(t, "rm", "-f", id) })
	return id
}

// waitForOutput follows the VM's logs until a line equal to want appears.
func waitForOutput(t *testing.T, id, want string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "firegopher"), "logs", "-f", id)
	cmd.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	found := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == want {
				found <- true
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatalf("VM %s ended without printing %q", id, want)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("VM %s did not print %q", id, want)
	}
}

func TestDetachedLifecycle(t *testing.T) {
	id := detached(t, "--name", "lifecycle", "--", "sh", "-c", `trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.1; done`)
	waitForOutput(t, "lifecycle", "ready")

	var listed []struct{ ID, Name, Status string }
	r := firegopher(t, "ps", "--json")
	if err := json.Unmarshal(r.stdout, &listed); err != nil {
		t.Fatalf("ps --json: %v\n%s", err, r)
	}
	found := false
	for _, vm := range listed {
		found = found || (vm.ID == id && vm.Name == "lifecycle" && vm.Status == "running")
	}
	if !found {
		t.Fatalf("ps does not show the running VM:\n%s", r)
	}

	// exec into the running VM: own output, own exit code.
	if r := firegopher(t, "exec", id[:6], "--", "sh", "-c", "echo from exec; exit 5"); r.code != 5 || string(r.stdout) != "from exec\n" {
		t.Fatalf("exec: %s", r)
	}
	// A signal from the host reaches the workload; its handler decides the exit code.
	if r := firegopher(t, "kill", "--signal", "TERM", "lifecycle"); r.code != 0 {
		t.Fatalf("kill: %s", r)
	}
	if r := firegopher(t, "wait", "lifecycle"); strings.TrimSpace(string(r.stdout)) != "42" {
		t.Fatalf("wait: want 42:\n%s", r)
	}
	if r := firegopher(t, "logs", id); string(r.stdout) != "ready\ngot TERM\n" {
		t.Fatalf("logs: %s", r)
	}
	var rec struct {
		Status   string
		ExitCode *int `json:"exit_code"`
	}
	r = firegopher(t, "inspect", "lifecycle")
	if err := json.Unmarshal(r.stdout, &rec); err != nil || rec.Status != "exited" || rec.ExitCode == nil || *rec.ExitCode != 42 {
		t.Fatalf("inspect: %v\n%s", err, r)
	}
	if r := firegopher(t, "rm", "lifecycle"); r.code != 0 {
		t.Fatalf("rm: %s", r)
	}
	if r := firegopher(t, "inspect", id); r.code != 125 || !strings.Contains(string(r.stderr), "no such VM") {
		t.Fatalf("inspect after rm: %s", r)
	}
}

func TestStopKillsAWorkloadThatIgnoresTERM(t *testing.T) {
	id := detached(t, "--", "sh", "-c", `trap '' TERM; echo ready; while :; do sleep 0.1; done`)
	waitForOutput(t, id, "ready")
	start := time.Now()
	if r := firegopher(t, "stop", "-t", "1", id); r.code != 0 {
		t.Fatalf("stop: %s", r)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("stop -t 1 took %v", d)
	}
	if r := firegopher(t, "ps", "-a"); !strings.Contains(string(r.stdout), id) || strings.Contains(string(r.stdout), id+"  running") {
		t.Fatalf("ps after stop:\n%s", r)
	}
	if procs := qemuProcessesOf(t, id); len(procs) != 0 {
		t.Fatalf("QEMU still running after stop: %v", procs)
	}
}

func TestUnknownAndAmbiguousNames(t *testing.T) {
	if r := firegopher(t, "logs", "no-such-vm"); r.code != 125 || !strings.Contains(string(r.stderr), "no such VM") {
		t.Fatalf("%s", r)
	}
	if r := firegopher(t, "rm", ""); r.code != 125 {
		t.Fatalf("%s", r)
	}
}

func TestTenConcurrentDetachedRuns(t *testing.T) {
	const n = 10
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ids[i] = detached(t, "--", "sh", "-c", fmt.Sprintf("echo vm-%d; exec sleep 600", i))
		}(i)
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, id := range ids {
		if id == "" || seen[id] {
			t.Fatalf("ids not distinct: %v", ids)
		}
		seen[id] = true
		waitForOutput(t, id, fmt.Sprintf("vm-%d", i))
	}
	var listed []struct{ ID, Status string }
	r := firegopher(t, "ps", "--json")
	json.Unmarshal(r.stdout, &listed)
	running := 0
	for _, vm := range listed {
		if seen[vm.ID] && vm.Status == "running" {
			running++
		}
	}
	if running != n {
		t.Fatalf("ps shows %d of our %d VMs running:\n%s", running, n, r)
	}
	if got := len(qemuProcesses(t)); got < n {
		t.Fatalf("%d QEMU processes for %d VMs", got, n)
	}
}

// TestGCAfterSupervisorKill kills -9 the supervisor of a running VM at a seeded point and
// checks that gc leaves nothing behind while another VM keeps running.
func TestGCAfterSupervisorKill(t *testing.T) {
	survivor := detached(t, "--", "sh", "-c", "echo up; exec sleep 600")
	waitForOutput(t, survivor, "up")
	for iteration := 0; iteration < 3; iteration++ {
		victim := detached(t, "--", "sh", "-c", "echo up; exec sleep 600")
		waitForOutput(t, victim, "up")
		pid := supervisorPid(t, victim)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(t, pid)
		r := firegopher(t, "gc")
		if r.code != 0 || !strings.Contains(string(r.stdout), victim) {
			t.Fatalf("gc did not report the lost VM:\n%s", r)
		}
		if procs := qemuProcessesOf(t, victim); len(procs) != 0 {
			t.Fatalf("gc left the VMM running: %v", procs)
		}
		dir := filepath.Join(stateDir, "vms", victim)
		for _, f := range []string{"rootfs.ext4", "rootfs.qcow2", "initrd.cpio", "control.sock", "api.sock"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				t.Fatalf("gc left %s", f)
			}
		}
		if r := firegopher(t, "gc"); strings.Contains(string(r.stdout), victim) {
			t.Fatalf("second gc found more of the same VM:\n%s", r)
		}
	}
	if procs := qemuProcessesOf(t, survivor); len(procs) == 0 {
		t.Fatal("gc killed a live VM")
	}
	if r := firegopher(t, "exec", survivor, "--", "true"); r.code != 0 {
		t.Fatalf("live VM does not answer after gc: %s", r)
	}
}

func supervisorPid(t *testing.T, id string) int {
	t.Helper()
	var rec struct {
		SupervisorPID int `json:"supervisor_pid"`
	}
	r := firegopher(t, "inspect", id)
	if err := json.Unmarshal(r.stdout, &rec); err != nil || rec.SupervisorPID == 0 {
		t.Fatalf("no supervisor pid: %v %s", err, r)
	}
	return rec.SupervisorPID
}

// waitGone blocks until pid has exited and released its files (it is not our child: poll
// /proc, bounded). A killed multi-threaded process shows its leader as a zombie while other
// threads are still exiting with the files (and flocks) open, so wait for those too.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		if strings.Contains(string(b), ") Z ") {
			tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
			if len(tasks) <= 1 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d did not exit", pid)
}

func qemuProcessesOf(t *testing.T, id string) []string {
	t.Helper()
	out, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64 -name firegopher-"+id).Output()
	return strings.Fields(string(out))
}
