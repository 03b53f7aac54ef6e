package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/firecracker-microvm/firecracker-go-sdk/client/operations"

	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fctest.Cleanup()
	os.Exit(code)
}

// forEachRelease runs fn as one subtest per modelled release, against its doubles.
func forEachRelease(t *testing.T, fn func(t *testing.T, rel fctest.Release)) {
	t.Helper()
	for _, v := range fctest.Versions {
		t.Run(fctest.SubtestName(v), func(t *testing.T) {
			rel, err := fctest.Build(v)
			if err != nil {
				t.Fatal(err)
			}
			fn(t, rel)
		})
	}
}

// testKernel is a vmlinux stand-in with virtio_mmio built in, taking virtio_mmio.device=
// (a Firecracker guest-config kernel), so that every release can boot it.
const testKernel = "fake vmlinux\x00virtio_mmio.device\x00"

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// testSpec is a VM whose files live in a fresh directory: a kernel, two disks, no initrd
// (a foreign guest: it runs until Ctrl-Alt-Del), extra is appended to the command line.
func testSpec(t *testing.T, extra string) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	return vmm.Spec{
		ID:        "t1",
		CPUs:      2,
		MemoryMiB: 256,
		Kernel:    writeFile(t, dir, "vmlinux", testKernel),
		Cmdline:   strings.TrimSpace("console=ttyS0 panic=-1 " + extra),
		Disks: []vmm.Disk{
			{Path: writeFile(t, dir, "root.img", ""), Serial: "fgroot", ReadOnly: true},
			{Path: writeFile(t, dir, "scratch.img", ""), Serial: "fgscratch"},
		},
		Dir:        dir,
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}

func backend(rel fctest.Release) *Backend { return &Backend{Binary: rel.Firecracker} }

func startCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// apiCall is one request as Firecracker logs it: to stdout (the console) until PUT /logger,
// then to its log (drained beside the console log).
type apiCall struct{ Method, Path, Body string }

var apiLogLine = regexp.MustCompile(`The API server received a (\w+) request on "([^"]*)"(?: with body (".*"))?\.$`)

// apiCalls reads the calls from the console log and Firecracker's own log after it. Read
// while the VM runs, the log may lag: waitLog first for the last line wanted.
func apiCalls(t *testing.T, console string) []apiCall {
	t.Helper()
	data, err := os.ReadFile(console)
	if err != nil {
		t.Fatal(err)
	}
	if log, err := os.ReadFile(console + LogSuffix); err == nil {
		data = append(data, log...)
	}
	var calls []apiCall
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		m := apiLogLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		c := apiCall{Method: strings.ToUpper(m[1]), Path: m[2]}
		if m[3] != "" {
			if c.Body, err = strconv.Unquote(m[3]); err != nil {
				t.Fatalf("log line %q: %v", sc.Text(), err)
			}
		}
		calls = append(calls, c)
	}
	return calls
}

func callPaths(calls []apiCall) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Method+" "+c.Path)
	}
	return out
}

// processesIn lists the processes whose command line mentions dir: a Firecracker of this
// test's VM that outlived Start.
func processesIn(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Contains(cmd, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestStartWaitConfiguresInOrder(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		spec := testSpec(t, fctest.RebootArg)
		b := backend(rel)
		inst, err := b.Start(startCtx(t), spec)
		if err != nil {
			t.Fatal(err)
		}
		if inst.Pid() <= 0 {
			t.Errorf("pid %d", inst.Pid())
		}
		if err := inst.Wait(); err != nil {
			t.Fatalf("a guest that reboots ends Firecracker cleanly: %v", err)
		}
		if b.Version.String() != rel.Version {
			t.Errorf("version %s, want %s read from the binary", b.Version, rel.Version)
		}
		calls := apiCalls(t, spec.ConsoleLog)
		want := []string{
			"PUT /logger",
			"PUT /metrics",
			"PUT /machine-config",
			"PUT /boot-source",
			"PUT /drives/fgroot",
			"PUT /drives/fgscratch",
			"PUT /vsock",
			"PUT /entropy",
			"PUT /actions",
		}
		if got := callPaths(calls); !reflect.DeepEqual(got, want) {
			t.Fatalf("calls:\n got %q\nwant %q", got, want)
		}
		if !strings.Contains(calls[0].Body, `"log_path":"`+LogFIFOPath(spec)+`"`) || !strings.Contains(calls[1].Body, `"metrics_path":"`+MetricsFIFOPath(spec)+`"`) {
			t.Errorf("logger %s metrics %s: want the FIFOs", calls[0].Body, calls[1].Body)
		}
		calls = calls[2:]
		for _, part := range []string{`"vcpu_count":2`, `"mem_size_mib":256`} {
			if !strings.Contains(calls[0].Body, part) {
				t.Errorf("machine-config %s: no %s", calls[0].Body, part)
			}
		}
		if !strings.Contains(calls[1].Body, `"kernel_image_path":"`+spec.Kernel+`"`) || !strings.Contains(calls[1].Body, "reboot=k") {
			t.Errorf("boot-source %s", calls[1].Body)
		}
		if !strings.Contains(calls[2].Body, `"is_read_only":true`) || !strings.Contains(calls[3].Body, `"is_read_only":false`) {
			t.Errorf("drives %s %s", calls[2].Body, calls[3].Body)
		}
		if !strings.Contains(calls[4].Body, `"uds_path":"`+VsockPath(spec)+`"`) {
			t.Errorf("vsock %s", calls[4].Body)
		}
		if _, err := os.Stat(APISocketPath(spec)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("API socket left behind: %v", err)
		}
	})
}

func TestStartRejectsBadSpecBeforeProcess(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		for _, tc := range []struct {
			name   string
			modify func(*vmm.Spec)
			want   string
		}{
			{"zero cpus", func(s *vmm.Spec) { s.CPUs = 0 }, "cpus"},
			{"too many cpus", func(s *vmm.Spec) { s.CPUs = 33 }, "vcpu_count"},
			{"id with dash", func(s *vmm.Spec) { s.Disks[1].Serial = "fg-scratch" }, "id"},
			{"duplicate serial", func(s *vmm.Spec) { s.Disks[1].Serial = s.Disks[0].Serial }, "duplicate"},
			{"no console log", func(s *vmm.Spec) { s.ConsoleLog = "" }, "console"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				spec := testSpec(t, "")
				tc.modify(&spec)
				_, err := backend(rel).Start(startCtx(t), spec)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err %v, want it to mention %q", err, tc.want)
				}
				if _, err := os.Stat(filepath.Join(spec.Dir, "console.log")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("console.log exists: a process was started")
				}
			})
		}
	})
}

// TestOldReleaseRefusesAKernelWithoutMMIOCmdline: 1.6 would boot a guest that sees no
// device; the backend refuses before starting anything, naming the fixes.
func TestOldReleaseRefusesAKernelWithoutMMIOCmdline(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		spec := testSpec(t, fctest.RebootArg)
		writeFile(t, spec.Dir, "vmlinux", "a kernel without the parameter")
		inst, err := backend(rel).Start(startCtx(t), spec)
		if rel.Version == "1.16.1" {
			if err != nil {
				t.Fatalf("1.16 finds devices through ACPI: %v", err)
			}
			if err := inst.Wait(); err != nil {
				t.Fatal(err)
			}
			return
		}
		if !errors.Is(err, ErrNoMMIOCmdline) {
			t.Fatalf("got %v, want ErrNoMMIOCmdline", err)
		}
		if _, err := os.Stat(spec.ConsoleLog); !errors.Is(err, os.ErrNotExist) {
			t.Error("a process was started")
		}
	})
}

func TestStartAPIErrorKillsProcess(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		spec := testSpec(t, "")
		os.Remove(spec.Disks[1].Path)
		inst, err := backend(rel).Start(startCtx(t), spec)
		if err == nil {
			inst.Kill()
			t.Fatal("start succeeded with a missing drive")
		}
		if !strings.Contains(err.Error(), "Unable to create the block device") || !strings.Contains(err.Error(), "drives") {
			t.Errorf("err %v: want the step and the fault_message", err)
		}
		if pids := processesIn(t, spec.Dir); len(pids) > 0 {
			t.Errorf("processes %v outlived the failed start", pids)
		}
		got := callPaths(apiCalls(t, spec.ConsoleLog))
		want := []string{"PUT /logger", "PUT /metrics", "PUT /machine-config", "PUT /boot-source", "PUT /drives/fgroot", "PUT /drives/fgscratch"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("calls %q, want %q", got, want)
		}
		if _, err := os.Stat(APISocketPath(spec)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("API socket left behind: %v", err)
		}
	})
}

func TestStartAPITimeoutKillsProcess(t *testing.T) {
	// A binary that answers --version but never opens its API socket.
	bin := script(t, "firecracker", `if [ "$1" = --version ]; then echo "Firecracker v1.16.1"; exit 0; fi
exec sleep 60`)
	spec := testSpec(t, "")
	b := &Backend{Binary: bin, APITimeout: 300 * time.Millisecond}
	_, err := b.Start(startCtx(t), spec)
	if err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("err %v", err)
	}
	if pids := processesIn(t, spec.Dir); len(pids) > 0 {
		t.Errorf("processes %v outlived the failed start", pids)
	}
}

func TestStartProcessExitsEarly(t *testing.T) {
	falseBin, err := exec.LookPath("false")
	if err != nil {
		t.Skip("no false(1)")
	}
	_, err = (&Backend{Binary: falseBin, Version: Version{1, 16, 1, ""}}).Start(startCtx(t), testSpec(t, ""))
	if err == nil || !strings.Contains(err.Error(), "exited before its API came up") {
		t.Fatalf("err %v", err)
	}
}

// waitConsole waits (bounded) for the console to contain s: the only sign a foreign guest
// gives of being up.
func waitConsole(t *testing.T, spec vmm.Spec, s string) {
	t.Helper()
	waitFile(t, spec.ConsoleLog, s)
}

// waitLog waits (bounded) for Firecracker's drained log to contain s.
func waitLog(t *testing.T, spec vmm.Spec, s string) {
	t.Helper()
	waitFile(t, LogPath(spec), s)
}

// waitFile polls: a file written by another process gives no other signal.
func waitFile(t *testing.T, path, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q", filepath.Base(path), s)
		}
	}
}

func TestKill(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		spec := testSpec(t, "")
		inst, err := backend(rel).Start(startCtx(t), spec)
		if err != nil {
			t.Fatal(err)
		}
		waitConsole(t, spec, "foreign init is running")
		if err := inst.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := inst.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("wait after kill: %v", err)
		}
		if err := inst.Kill(); err != nil {
			t.Errorf("second kill: %v", err)
		}
		if pids := processesIn(t, spec.Dir); len(pids) > 0 {
			t.Errorf("processes %v outlived the kill", pids)
		}
		if console, _ := os.ReadFile(spec.ConsoleLog); !strings.Contains(string(console), "Running Firecracker v"+rel.Version) {
			t.Errorf("console log: %q", console)
		}
	})
}

// TestShutdownForeignGuest: Ctrl-Alt-Del reboots a guest whose init is its own (systemd),
// and Firecracker exits cleanly.
func TestShutdownForeignGuest(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		spec := testSpec(t, "")
		spec.NoControl = true
		inst, err := backend(rel).Start(startCtx(t), spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := inst.Control(startCtx(t)); !errors.Is(err, vmm.ErrNoControl) {
			t.Errorf("control of a guest without a channel: %v", err)
		}
		waitConsole(t, spec, "foreign init is running")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := inst.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if err := inst.Wait(); err != nil {
			t.Errorf("after Ctrl-Alt-Del the guest reboots and Firecracker exits 0: %v", err)
		}
	})
}

func TestCustomSteps(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		spec := testSpec(t, fctest.RebootArg)
		var state, version string
		b := backend(rel)
		b.Steps = DefaultSteps().Remove(StepVsock).InsertBefore(StepInstanceStart, Step{
			Name: "describe",
			Do: func(ctx context.Context, api operations.ClientIface, _ *Config) error {
				ok, err := api.DescribeInstance(operations.NewDescribeInstanceParamsWithContext(ctx))
				if err != nil {
					return apiError(err)
				}
				state, version = *ok.Payload.State, *ok.Payload.VmmVersion
				return nil
			},
		})
		inst, err := b.Start(startCtx(t), spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := inst.Wait(); err != nil {
			t.Fatal(err)
		}
		if state != "Not started" || version != rel.Version {
			t.Errorf("before boot: state %q version %q", state, version)
		}
		got := callPaths(apiCalls(t, spec.ConsoleLog))
		if got[len(got)-2] != "GET /" || strings.Contains(strings.Join(got, ","), "/vsock") {
			t.Errorf("calls %q", got)
		}
	})
}

func TestStepsEditing(t *testing.T) {
	def := DefaultSteps()
	want := []string{StepLogger, StepMetrics, StepMachineConfig, StepBootSource, StepDrives, StepNetworkInterfaces, StepVsock, StepEntropy, StepInstanceStart}
	if !reflect.DeepEqual(def.Names(), want) {
		t.Fatalf("default %q", def.Names())
	}
	nop := func(context.Context, operations.ClientIface, *Config) error { return nil }
	s := def.Remove(StepEntropy).InsertAfter(StepBootSource, Step{"entropy", nop}).
		InsertBefore(StepMachineConfig, Step{"describe", nop}).
		InsertAfter("missing", Step{"last", nop}).
		Remove(StepNetworkInterfaces).Remove(StepLogger).
		Replace(Step{StepVsock, nop})
	wantEdited := []string{StepMetrics, "describe", StepMachineConfig, StepBootSource, "entropy", StepDrives, StepVsock, StepInstanceStart, "last"}
	if !reflect.DeepEqual(s.Names(), wantEdited) {
		t.Errorf("edited %q, want %q", s.Names(), wantEdited)
	}
	if !reflect.DeepEqual(def.Names(), want) {
		t.Errorf("editing changed the original: %q", def.Names())
	}
}

func TestNew(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, "firecracker-does-not-exist-here"); err == nil || !strings.Contains(err.Error(), "run firegopher firecracker install") {
		t.Errorf("missing binary: %v", err)
	}
	old := script(t, "firecracker", `echo "Firecracker v1.5.1"`)
	if _, err := New(ctx, old); err == nil || !strings.Contains(err.Error(), "outside the tested range") {
		t.Errorf("untested release: %v", err)
	}
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		b, err := New(ctx, rel.Firecracker)
		if err != nil {
			t.Fatal(err)
		}
		if b.Name() != "firecracker" || b.Binary != rel.Firecracker || b.Version.String() != rel.Version || b.Jailer != nil {
			t.Errorf("backend %+v", b)
		}
		var _ vmm.Backend = b
	})
}

func TestDialVsock(t *testing.T) {
	uds := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.Listen("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A stand-in for Firecracker's muxer: port 1024 has a listener, anything else does not.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			if line == "CONNECT 1024\n" {
				io.WriteString(c, "OK 1073741824\nhello")
			}
			c.Close()
		}
	}()
	ctx := startCtx(t)
	c, err := DialVsock(ctx, uds, ControlVsockPort)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(data) != "hello" {
		t.Errorf("read %q, %v", data, err)
	}
	if c, err := DialVsock(ctx, uds, 52); err == nil {
		c.Close()
		t.Error("connect to a port nobody listens on succeeded")
	}
}
