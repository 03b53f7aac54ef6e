//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
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

// Snapshot templates: each test uses a memory size of its own, so the templates it sees
// being built are its own (the cache is shared with the user's and other runs'), and
// removes them when it ends.

type templateKey struct {
	Kernel    string `json:"kernel"`
	Initrd    string `json:"initrd"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
}

func templatesDir() string { return filepath.Join(stateDir, "cache", "templates") }

// templatesOf lists the complete templates of memory size mib.
func templatesOf(t *testing.T, mib int) map[string]templateKey {
	t.Helper()
	entries, _ := os.ReadDir(templatesDir())
	out := map[string]templateKey{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(templatesDir(), e.Name(), "key.json"))
		if err != nil {
			continue
		}
		var k templateKey
		if err := json.Unmarshal(b, &k); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		if k.MemoryMiB == mib {
			out[e.Name()] = k
		}
	}
	return out
}

// ownTemplates makes mib this test's memory size: none of its templates may exist yet,
// and they are removed at the end.
func ownTemplates(t *testing.T, mib int) {
	t.Helper()
	remove := func() {
		for name := range templatesOf(t, mib) {
			os.RemoveAll(filepath.Join(templatesDir(), name))
		}
	}
	remove() // left by an earlier, interrupted run of this test
	t.Cleanup(remove)
}

func mem(mib int) string { return strconv.Itoa(mib) + "M" }

// restored says whether a --debug run restored from a template.
func restored(r result) bool {
	return bytes.Contains(r.stderr, []byte("restoring from snapshot template"))
}

// guestFacts is what one VM tells about itself.
type guestFacts struct {
	random, mac, hostname, machineID string
	clock                            float64
	others                           []string // marker files of other VMs it can see
}

const factsScript = `set -e
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo
cat /sys/class/net/eth0/address
hostname
cat /etc/machine-id
date +%s.%N
ls / | grep '^written-by-' | tr '\n' ' '; echo
touch /written-by-$(hostname)
sync`

func parseFacts(t *testing.T, r result) guestFacts {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(r.stdout), "\n"), "\n")
	if r.code != 0 || len(lines) != 6 {
		t.Fatalf("want 6 lines of facts:\n%s", r)
	}
	clock, err := strconv.ParseFloat(lines[4], 64)
	if err != nil {
		t.Fatalf("guest clock %q: %v", lines[4], err)
	}
	return guestFacts{random: lines[0], mac: lines[1], hostname: lines[2], machineID: lines[3], clock: clock, others: strings.Fields(lines[5])}
}

func unixNow() float64 { return float64(time.Now().UnixNano()) / 1e9 }

// runTimed is runFiregopher that also notes when each line of stdout arrived (Unix seconds).
func runTimed(t *testing.T, prefix []string, args ...string) (result, []float64) {
	t.Helper()
	argv := append(append(append([]string(nil), prefix...), filepath.Join(binDir, "firegopher")), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(3*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	var stdout bytes.Buffer
	var arrived []float64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		arrived = append(arrived, unixNow())
		stdout.Write(append(sc.Bytes(), '\n'))
	}
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("firegopher %q: %v", args, err)
	}
	r := result{stdout.Bytes(), errOut.Bytes(), code}
	if len(arrived) < 6 {
		t.Fatalf("want 6 lines of facts:\n%s", r)
	}
	return r, arrived
}

func TestSnapshotRestoredVMsAreNewMachines(t *testing.T) {
	const mib = 448
	ownTemplates(t, mib)
	n := newTestNet(t)
	// The first run builds the template, the second ages it (a guest that kept the
	// template's clock would be seconds behind); the two after them are compared.
	for i := 0; i < 2; i++ {
		if r := n.fg(t, "--debug", "run", "--net", "--memory", mem(mib), "--", "true"); r.code != 0 || !restored(r) {
			t.Fatalf("run %d: want exit 0 and a restore:\n%s", i, r)
		}
	}
	var facts []guestFacts
	for i := 0; i < 2; i++ {
		r, arrived := runTimed(t, []string{"ip", "netns", "exec", n.host}, "--debug", "run", "--net", "--memory", mem(mib), "--", "sh", "-c", factsScript)
		if !restored(r) {
			t.Fatalf("run %d did not restore from the template:\n%s", i, r)
		}
		f := parseFacts(t, r)
		// The clock line reaches the host a few milliseconds after the guest read its clock.
		if lag := arrived[4] - f.clock; lag < -0.1 || lag > 1 {
			t.Errorf("run %d: guest clock %.3f, host clock %.3f when it arrived: not within 1 s", i, f.clock, arrived[4])
		}
		if len(f.random) != 64 || len(f.machineID) != 32 {
			t.Errorf("run %d: random %q machine-id %q", i, f.random, f.machineID)
		}
		if len(f.others) != 0 {
			t.Errorf("run %d sees other VMs' files: %v", i, f.others)
		}
		facts = append(facts, f)
	}
	a, b := facts[0], facts[1]
	for what, pair := range map[string][2]string{
		"/dev/urandom": {a.random, b.random}, "MAC": {a.mac, b.mac},
		"hostname": {a.hostname, b.hostname}, "machine-id": {a.machineID, b.machineID},
	} {
		if pair[0] == pair[1] {
			t.Errorf("two restored VMs share their %s: %q", what, pair[0])
		}
	}
	if len(templatesOf(t, mib)) != 1 {
		t.Errorf("templates of %d MiB: %v, want one", mib, templatesOf(t, mib))
	}
}

func TestSnapshotNewTemplateWhenAnInputChanges(t *testing.T) {
	const mib, other = 464, 480
	ownTemplates(t, mib)
	ownTemplates(t, other)
	runOK := func(env []string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, "firegopher"), append([]string{"--debug", "run"}, args...)...)
		cmd.Env = append(append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir), env...)
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("restoring from snapshot template")) {
			t.Fatalf("run %v %v: %v, want a restore:\n%s", env, args, err, out)
		}
		return out
	}
	runOK(nil, "--memory", mem(mib), "--", "true")
	runOK(nil, "--memory", mem(mib), "--", "true") // the same inputs: no new template
	if got := templatesOf(t, mib); len(got) != 1 {
		t.Fatalf("after two identical runs: %v, want one template", got)
	}
	// --debug says why the cached template was not used.
	if out := runOK(nil, "--memory", mem(mib), "--cpus", "2", "--", "true"); !bytes.Contains(out, []byte("differs=[cpus]")) {
		t.Errorf("a run with another --cpus does not say the template is stale for its cpus:\n%s", out)
	}
	runOK(nil, "--memory", mem(other), "--", "true")
	// Another init: a copy with a byte appended (a different digest, the same program).
	initCopy := filepath.Join(t.TempDir(), "firegopher-init")
	data, err := os.ReadFile(filepath.Join(binDir, "firegopher-init"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initCopy, append(data, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	runOK([]string{"FIREGOPHER_INIT=" + initCopy}, "--memory", mem(mib), "--", "true")
	// Another kernel: the default one through a registry (another manifest, the same
	// vmlinux and modules).
	kernelRef := startRegistry(t) + "/firegopher/snapshot-kernel:t"
	if r := firegopher(t, "push", "kernel/default", kernelRef); r.code != 0 {
		t.Fatalf("push: %s", r)
	}
	t.Cleanup(func() { firegopher(t, "rmi", "kernel/snapshot-kernel-t") })
	runOK(nil, "--memory", mem(mib), "--kernel", kernelRef, "--", "true")
	got := templatesOf(t, mib)
	cpus, initrds, kernels := map[int]bool{}, map[string]bool{}, map[string]bool{}
	for _, k := range got {
		cpus[k.CPUs], initrds[k.Initrd], kernels[k.Kernel] = true, true, true
	}
	if len(got) != 4 || !cpus[1] || !cpus[2] || len(initrds) != 2 || len(kernels) != 2 {
		t.Errorf("templates of %d MiB: %v, want 1 and 2 vCPUs, two initrds and two kernels", mib, got)
	}
	if len(templatesOf(t, other)) != 1 {
		t.Errorf("no template of its own for --memory %s", mem(other))
	}
	// The flag and the environment turn restores off.
	if r := firegopher(t, "--debug", "run", "--no-snapshot", "--memory", mem(mib), "--", "true"); r.code != 0 || restored(r) {
		t.Errorf("--no-snapshot restored or failed:\n%s", r)
	}
}

func TestSnapshotRacingFirstRunsBuildOneTemplate(t *testing.T) {
	const mib = 496
	ownTemplates(t, mib)
	var wg sync.WaitGroup
	results := make([]result, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = firegopher(t, "--debug", "run", "--memory", mem(mib), "--", "sh", "-c", "echo ok")
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 || string(r.stdout) != "ok\n" || !restored(r) {
			t.Errorf("run %d: want ok from a restored VM:\n%s", i, r)
		}
	}
	built := 0
	for _, r := range results {
		built += bytes.Count(r.stderr, []byte("snapshot template built"))
	}
	if got := templatesOf(t, mib); len(got) != 1 || built != 1 {
		t.Errorf("templates of %d MiB: %v, built %d times; want one, once", mib, got, built)
	}
}

func TestSnapshotKillDuringCreationLeavesNoHalfTemplate(t *testing.T) {
	const mib = 512 + 16
	ownTemplates(t, mib)
	before, _ := filepath.Glob(filepath.Join(templatesDir(), ".tmp-*"))
	cmd := exec.Command(filepath.Join(binDir, "firegopher"), "run", "--memory", mem(mib), "--", "true")
	cmd.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for a scratch directory to appear (the template is being built), bounded.
	deadline := time.Now().Add(time.Minute)
	var scratch string
	for scratch == "" {
		now, _ := filepath.Glob(filepath.Join(templatesDir(), ".tmp-*"))
		for _, p := range now {
			if !contains(before, p) {
				scratch = p
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("no template build started within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The scratch exists only while the template is being built: kill now.
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if got := templatesOf(t, mib); len(got) != 0 {
		t.Fatalf("a killed build left a template: %v", got)
	}
	if r := firegopher(t, "gc"); r.code != 0 { // the killed run's VM
		t.Fatalf("gc:\n%s", r)
	}
	if r := firegopher(t, "--debug", "run", "--memory", mem(mib), "--", "echo", "ok"); r.code != 0 || string(r.stdout) != "ok\n" || !restored(r) {
		t.Fatalf("the run after the kill:\n%s", r)
	}
	if got := templatesOf(t, mib); len(got) != 1 {
		t.Fatalf("templates after the kill and a run: %v, want one", got)
	}
	if _, err := os.Stat(scratch); !os.IsNotExist(err) {
		t.Errorf("the killed build's scratch %s is still there (%v)", scratch, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
