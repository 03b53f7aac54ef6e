//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFaultInjection kills -9 the firegopher CLI, a VM's supervisor or its VMM at a random
// point of a networked `run`/`run -d` (seeded; FIREGOPHER_FAULT_SEED repeats a run), then
// runs gc and checks that nothing is left: no VMM process, TAP, nft set element, address
// allocation, disk clone or lock, while a live VM in the same namespace keeps working.
func TestFaultInjection(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("FIREGOPHER_FAULT_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d (set FIREGOPHER_FAULT_SEED to repeat)", seed)
	rng := rand.New(rand.NewSource(seed))
	n := newTestNet(t)

	r := n.fg(t, "run", "-d", "--net", "--name", "survivor", "--", "sh", "-c", "echo up; exec sleep 600")
	if r.code != 0 {
		t.Fatalf("survivor: %s", r)
	}
	survivor := strings.TrimSpace(string(r.stdout))
	t.Cleanup(func() { n.fg(t, "rm", "-f", survivor) })
	// Every victim has a volume attached read-write: a kill anywhere must free it.
	vol := fmt.Sprintf("faults-%d", os.Getpid())
	if r := firegopher(t, "volume", "create", vol, "--size", "64M"); r.code != 0 {
		t.Fatalf("volume create: %s", r)
	}
	t.Cleanup(func() { firegopher(t, "volume", "rm", vol) })

	for i := 0; i < 6; i++ {
		target := []string{"cli", "supervisor", "vmm"}[rng.Intn(3)]
		delay := time.Duration(rng.Intn(4000)) * time.Millisecond
		t.Logf("iteration %d: kill -9 the %s after %v", i, target, delay)
		switch target {
		case "cli":
			// A foreground run: the CLI is the supervisor; killed anywhere from flag parsing
			// to a running workload.
			cmd := exec.Command("ip", "netns", "exec", n.host, filepath.Join(binDir, "firegopher"), "run", "--net", "-v", vol+":/data", "--", "sleep", "600")
			cmd.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay) // the fault's moment, not a synchronisation
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			// `ip netns exec` execs firegopher in place, so the kill reached firegopher itself.
		case "supervisor", "vmm":
			r := n.fg(t, "run", "-d", "--net", "-v", vol+":/data", "--", "sleep", "600")
			if r.code != 0 {
				t.Fatalf("run -d: %s", r)
			}
			id := strings.TrimSpace(string(r.stdout))
			time.Sleep(delay)
			var rec struct {
				SupervisorPID int `json:"supervisor_pid"`
				VMMPID        int `json:"vmm_pid"`
			}
			json.Unmarshal(firegopher(t, "inspect", id).stdout, &rec)
			pid := rec.SupervisorPID
			if target == "vmm" {
				pid = rec.VMMPID
			}
			if pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
				waitGone(t, pid)
			}
			if target == "vmm" {
				// The supervisor sees its VMM die and cleans up by itself.
				firegopher(t, "wait", id)
			}
			t.Cleanup(func() { firegopher(t, "rm", "-f", id) })
		}
		if r := n.fg(t, "gc"); r.code != 0 {
			t.Fatalf("gc: %s", r)
		}
		assertOnlySurvivorLeft(t, n, survivor)
		var vols []struct {
			Name  string
			Users []any
		}
		json.Unmarshal(firegopher(t, "volume", "ls", "--json").stdout, &vols)
		for _, v := range vols {
			if v.Name == vol && len(v.Users) != 0 {
				t.Fatalf("the volume is still attached after the kill and gc: %+v", v)
			}
		}
	}
	if r := n.fg(t, "exec", survivor, "--", "true"); r.code != 0 {
		t.Fatalf("the live VM does not answer after the faults and gc: %s", r)
	}
}

func assertOnlySurvivorLeft(t *testing.T, n *testNet, survivor string) {
	t.Helper()
	if procs := qemuProcesses(t); len(procs) == 0 || len(qemuProcessesOf(t, survivor)) == 0 {
		t.Fatal("the live VM's QEMU is gone")
	}
	if got := len(qemuProcesses(t)); got != 1 {
		t.Fatalf("%d QEMU processes, want only the survivor's", got)
	}
	taps, _ := exec.Command("ip", "-n", n.host, "-o", "link", "show", "type", "tun").Output()
	if got := strings.Count(string(taps), "\n"); got != 1 {
		t.Fatalf("%d TAPs in the namespace, want the survivor's only:\n%s", got, taps)
	}
	set, _ := exec.Command("ip", "netns", "exec", n.host, "nft", "list", "set", "inet", "firegopher", "taps").Output()
	if got := strings.Count(string(set), "tap"); got > 2 { // "set taps" and the survivor's element
		t.Fatalf("firewall still lists TAPs of dead VMs:\n%s", set)
	}
	if ls := strings.TrimSpace(string(n.fg(t, "net", "ls").stdout)); strings.Count(ls, "\n") != 1 {
		t.Fatalf("address allocations of dead VMs remain:\n%s", ls)
	}
	disks, _ := filepath.Glob(filepath.Join(stateDir, "vms", "*", "rootfs.*")) // raw clone or qcow2 overlay
	if len(disks) != 1 {
		t.Fatalf("disk clones left: %v", disks)
	}
}
