package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/vmm/fake"
)

func TestRunForegroundStreamsOutputAndRemovesTheVM(t *testing.T) {
	h := testHost(t)
	m := testMachine(t, h, "sh", "-c", "echo out; echo err >&2; exit 3")
	c, err := h.Create(m, false)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	exit, err := c.Run(context.Background(), Stdio{Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatal(err)
	}
	if exit.Code != 3 || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Fatalf("exit %+v stdout %q stderr %q", exit, stdout.String(), stderr.String())
	}
	if _, err := h.Lookup(m.ID); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("a foreground VM's record outlives it: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.VMsDir(), m.ID)); !os.IsNotExist(err) {
		t.Errorf("a foreground VM's directory outlives it: %v", err)
	}
}

func TestRunEndsWithoutWaitingForATimeout(t *testing.T) {
	h := testHost(t)
	c, err := h.Create(testMachine(t, h, "true"), false)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Run(context.Background(), Stdio{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > endTimeout/2 {
		t.Fatalf("a guest that ends its VM took %s: something waited for a timeout", d)
	}
}

// TestFaultAtEveryStepLeavesNothing fails the start at each step k in turn and checks that
// steps k-1…1 were undone, in reverse, and that nothing the VM made is left.
func TestFaultAtEveryStepLeavesNothing(t *testing.T) {
	for k, failing := range DefaultSteps() {
		t.Run(failing.Name, func(t *testing.T) {
			h := testHost(t)
			m := testMachine(t, h, "sleep", "100")
			c, err := h.Create(m, true)
			if err != nil {
				t.Fatal(err)
			}
			vm, err := h.NewVM(c.st, c.Record)
			if err != nil {
				t.Fatal(err)
			}
			var undone []string
			steps := DefaultSteps()
			for i := range steps {
				st := steps[i]
				undo := st.Undo
				steps[i].Undo = func(vm *VM) error {
					undone = append(undone, st.Name)
					if undo == nil {
						return nil
					}
					return undo(vm)
				}
			}
			steps[k].Do = func(context.Context, *VM) error { return errors.New("injected") }
			_, err = Supervise(context.Background(), vm, Options{Steps: steps, Lock: c.lock})
			if err == nil || !strings.Contains(err.Error(), failing.Name+": injected") {
				t.Fatalf("error %v should name step %s", err, failing.Name)
			}
			var want []string
			for i := k - 1; i >= 0; i-- {
				want = append(want, steps[i].Name)
			}
			if !slices.Equal(undone, want) {
				t.Errorf("undone %v, want %v", undone, want)
			}
			assertNothingLeft(t, h, vm.Dir)
			rec, err := h.Lookup(m.ID)
			if err != nil || rec.Status != state.Exited || !strings.Contains(rec.Error, failing.Name) || rec.Network != nil {
				t.Errorf("record after a failed start: %+v, %v", rec, err)
			}
		})
	}
}

// assertNothingLeft: only the lock and logs remain in dir, and no process is tagged with it.
func assertNothingLeft(t *testing.T, h *Host, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		switch {
		// A backend's own logs sit beside the console log (console.log.qemu,
		// console.log.firecracker, console.log.metrics) and are kept with it.
		case e.Name() == LockFile, strings.HasSuffix(e.Name(), ".log"), strings.HasPrefix(e.Name(), ConsoleLog+"."):
		default:
			t.Errorf("%s left in the VM directory", e.Name())
		}
	}
	procs, err := procTable{}.Tagged() // read-only look at this host's processes
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.VMDir == dir {
			t.Errorf("process %d of the VM still runs", p.Pid)
		}
	}
	if Owned(dir) {
		t.Error("the VM directory is still locked")
	}
}

func TestDetachedLifecycle(t *testing.T) {
	h := testHost(t)
	t.Setenv(serveEnv, h.StateDir)
	m := testMachine(t, h, "sh", "-c", "echo hello; exec sleep 100")
	m.Name = "web"
	c, err := h.Create(m, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartDetached([]string{os.Args[0], "-test.run=^$"}); err != nil {
		t.Fatal(err)
	}
	rec, err := h.Lookup("web")
	if err != nil || rec.Status != state.Running || !Running(rec) {
		t.Fatalf("after StartDetached: %+v %v", rec, err)
	}
	waitForHello(t, rec.Dir)
	cl, err := Dial(rec.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Exec(agentExec("sh", "-c", "echo from exec; exit 4")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	exit, err := cl.Copy(&out, &out)
	if err != nil || exit.Code != 4 || out.String() != "from exec\n" {
		t.Fatalf("exec: %q %+v %v", out.String(), exit, err)
	}
	// A signal on an exec's connection reaches that exec, not the workload.
	cl3, err := Dial(rec.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cl3.Close()
	if err := cl3.Exec(agentExec("sh", "-c", "echo ready; exec sleep 100")); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	execExit := make(chan agent.Exit, 1)
	go func() {
		e, _ := cl3.Copy(pw, io.Discard)
		pw.Close()
		execExit <- e
	}()
	if line, _ := bufio.NewReader(pr).ReadString('\n'); line != "ready\n" {
		t.Fatalf("exec said %q", line)
	}
	go io.Copy(io.Discard, pr)
	if err := cl3.Signal(int(syscall.SIGTERM)); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-execExit:
		if e.Code != 143 {
			t.Fatalf("the signalled exec: %+v, want 143", e)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the exec did not get its signal")
	}
	if rec, err := h.Lookup("web"); err != nil || rec.Status != state.Running || !Running(rec) {
		t.Fatalf("the workload did not outlive its exec's signal: %+v %v", rec, err)
	}
	if err := h.Stop(rec, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if rec, err = h.Wait(rec); err != nil || rec.ExitCode == nil || *rec.ExitCode != 143 {
		t.Fatalf("after stop: %+v %v", rec, err)
	}
	if log, _ := os.ReadFile(filepath.Join(rec.Dir, OutputLog)); string(log) != "hello\n" {
		t.Errorf("output log %q", log)
	}
	assertNothingLeft(t, h, rec.Dir)

	// Started again (start, or the proxy's autostart): a new run of the same machine whose
	// output follows the first run's in the log.
	if err := h.Start(rec, []string{os.Args[0], "-test.run=^$"}); err != nil {
		t.Fatal(err)
	}
	if rec, err = h.Lookup("web"); err != nil || rec.Status != state.Running || !Running(rec) || rec.ExitCode != nil {
		t.Fatalf("after Start: %+v %v", rec, err)
	}
	if err := h.Start(rec, []string{os.Args[0], "-test.run=^$"}); err == nil || !strings.Contains(err.Error(), "is running") {
		t.Errorf("Start of a running VM: %v", err)
	}
	waitForHello(t, rec.Dir)
	if err := h.Stop(rec, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if rec, err = h.Wait(rec); err != nil || rec.ExitCode == nil || *rec.ExitCode != 143 {
		t.Fatalf("after the second stop: %+v %v", rec, err)
	}
	if log, _ := os.ReadFile(filepath.Join(rec.Dir, OutputLog)); string(log) != "hello\nhello\n" {
		t.Errorf("output log after two runs %q", log)
	}
	assertNothingLeft(t, h, rec.Dir)
	if err := h.Remove(rec, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rec.Dir); !os.IsNotExist(err) {
		t.Errorf("rm left %s", rec.Dir)
	}
}

func TestStartRefusesAForegroundVM(t *testing.T) {
	h := testHost(t)
	rec := &state.VM{ID: "aaaaaaaaaaaa", Dir: filepath.Join(h.VMsDir(), "aaaaaaaaaaaa"), Status: state.Exited}
	if err := h.Start(rec, nil); err == nil || !strings.Contains(err.Error(), "only a detached VM") {
		t.Fatalf("Start of a foreground VM: %v", err)
	}
}

func TestStopOfAVMThatIsNotRunningIsANoop(t *testing.T) {
	h := testHost(t)
	rec := &state.VM{ID: "aaaaaaaaaaaa", Dir: filepath.Join(h.VMsDir(), "aaaaaaaaaaaa")}
	if err := h.Stop(rec, time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(rec.Dir); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("dial of a VM nobody owns: %v", err)
	}
}

func init() {
	fake.RunGuestIfRequested() // the fake guest inherits our environment: it comes first
	// The detached-supervisor half of TestDetachedLifecycle: this test binary, re-executed.
	if dir := os.Getenv(serveEnv); dir != "" && len(os.Args) > 1 && os.Args[1] == "-test.run=^$" {
		h := &Host{StateDir: dir, Log: discardLog(), Backend: testHostBackend}
		st, _ := h.State()
		vms, _ := st.List()
		err := fmt.Errorf("no VM to serve")
		for _, v := range vms {
			if v.Status == state.Created {
				err = h.ServeDetached(context.Background(), v.ID)
			}
		}
		if err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// waitForHello returns once the VM's workload has printed its first line ("hello\n") in
// this run (the supervisor's attach offset counts this run's output).
func waitForHello(t *testing.T, dir string) {
	t.Helper()
	cl, err := Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offset, err := cl.Attach()
	if err != nil {
		t.Fatal(err)
	}
	if offset >= int64(len("hello\n")) {
		return
	}
	f, err := cl.conn.Receive()
	if err != nil || string(f.Payload) != "hello\n" {
		t.Fatalf("first output %q, %v", f.Payload, err)
	}
}
