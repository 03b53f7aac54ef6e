package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/operations"

	"github.com/firegopher/firegopher/internal/vmm"
)

// testSpec is a VM whose files live in a fresh directory; the fake reads its options there.
func testSpec(t *testing.T, opts fakeOptions) vmm.Spec {
	t.Helper()
	dir := t.TempDir()
	data, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, fakeOptionsFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return vmm.Spec{
		ID:        "t1",
		CPUs:      2,
		MemoryMiB: 256,
		Kernel:    filepath.Join(dir, "vmlinux"),
		Initrd:    filepath.Join(dir, "initrd.img"),
		Cmdline:   "console=ttyS0 reboot=k panic=1 firegopher.root=fgroot",
		Disks: []vmm.Disk{
			{Path: filepath.Join(dir, "root.img"), Serial: "fgroot", ReadOnly: true},
			{Path: filepath.Join(dir, "scratch.img"), Serial: "fgscratch"},
		},
		NICs: []vmm.NIC{
			{TAP: "fgtap0", MAC: "02:fc:00:00:00:01"},
			{TAP: "fgtap1", MAC: "02:fc:00:00:00:02"},
		},
		Dir:        dir,
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
}

// fakeBackend runs this test binary as firecracker (TestMain turns it into the fake).
func fakeBackend() *Backend { return &Backend{Binary: os.Args[0]} }

func readCalls(t *testing.T, spec vmm.Spec) []fakeCall {
	t.Helper()
	f, err := os.Open(filepath.Join(filepath.Dir(spec.ConsoleLog), fakeCallsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var calls []fakeCall
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c fakeCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, c)
	}
	return calls
}

func callPaths(calls []fakeCall) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Method+" "+c.Path)
	}
	return out
}

func fakePid(t *testing.T, spec vmm.Spec) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(filepath.Dir(spec.ConsoleLog), fakePidFile))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(data))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// assertGone checks the process has exited and been reaped (Start reaps before returning).
func assertGone(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists (kill 0: %v)", pid, err)
	}
}

func startCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartWaitConfiguresInOrder(t *testing.T) {
	spec := testSpec(t, fakeOptions{})
	inst, err := fakeBackend().Start(startCtx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Pid() <= 0 {
		t.Errorf("pid %d", inst.Pid())
	}
	if err := inst.Wait(); err != nil {
		t.Fatalf("wait: %v", err)
	}

	calls := readCalls(t, spec)
	want := []string{
		"PUT /machine-config",
		"PUT /boot-source",
		"PUT /drives/fgroot",
		"PUT /drives/fgscratch",
		"PUT /network-interfaces/eth0",
		"PUT /network-interfaces/eth1",
		"PUT /vsock",
		"PUT /actions",
	}
	if got := callPaths(calls); !reflect.DeepEqual(got, want) {
		t.Fatalf("calls:\n got %q\nwant %q", got, want)
	}
	body := func(i int, v any) {
		t.Helper()
		if err := json.Unmarshal(calls[i].Body, v); err != nil {
			t.Fatalf("%s: %v", calls[i].Path, err)
		}
	}
	var mc models.MachineConfiguration
	body(0, &mc)
	if *mc.VcpuCount != 2 || *mc.MemSizeMib != 256 {
		t.Errorf("machine-config: vcpus %d mem %d", *mc.VcpuCount, *mc.MemSizeMib)
	}
	var bs models.BootSource
	body(1, &bs)
	if *bs.KernelImagePath != spec.Kernel || bs.InitrdPath != spec.Initrd || bs.BootArgs != fakeBackend().Cmdline(spec) {
		t.Errorf("boot-source: %+v", bs)
	}
	for i, d := range spec.Disks {
		var got models.Drive
		body(2+i, &got)
		if *got.DriveID != d.Serial || *got.PathOnHost != d.Path || *got.IsReadOnly != d.ReadOnly || *got.IsRootDevice {
			t.Errorf("drive %d: id %s path %s ro %v root %v", i, *got.DriveID, *got.PathOnHost, *got.IsReadOnly, *got.IsRootDevice)
		}
	}
	for i, n := range spec.NICs {
		var got models.NetworkInterface
		body(4+i, &got)
		if *got.HostDevName != n.TAP || got.GuestMac != n.MAC {
			t.Errorf("nic %d: %+v", i, got)
		}
	}
	var vs models.Vsock
	body(6, &vs)
	if *vs.GuestCid != 3 || *vs.UdsPath != filepath.Join(spec.Dir, "v.sock") {
		t.Errorf("vsock: cid %d uds %s", *vs.GuestCid, *vs.UdsPath)
	}
	var act models.InstanceActionInfo
	body(7, &act)
	if *act.ActionType != "InstanceStart" {
		t.Errorf("action: %s", *act.ActionType)
	}

	console, err := os.ReadFile(spec.ConsoleLog)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(console), "fake guest booted") {
		t.Errorf("console log: %q", console)
	}
	if _, err := os.Stat(APISocketPath(spec)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API socket left behind: %v", err)
	}
}

func TestStartRejectsBadSpecBeforeProcess(t *testing.T) {
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
			spec := testSpec(t, fakeOptions{})
			dir := spec.Dir
			tc.modify(&spec)
			_, err := fakeBackend().Start(startCtx(t), spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to mention %q", err, tc.want)
			}
			for _, f := range []string{fakePidFile, "console.log", fakeCallsFile} {
				if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists: a process was started", f)
				}
			}
		})
	}
}

func TestStartWithJailerIsRefused(t *testing.T) {
	b := fakeBackend()
	b.Jailer = &JailerConfig{Binary: "jailer", ID: "t1"}
	if _, err := b.Start(startCtx(t), testSpec(t, fakeOptions{})); err == nil || !strings.Contains(err.Error(), "jailer") {
		t.Fatalf("err %v", err)
	}
}

func TestStartAPIErrorKillsProcess(t *testing.T) {
	spec := testSpec(t, fakeOptions{RejectDrives: true, StayUp: true})
	inst, err := fakeBackend().Start(startCtx(t), spec)
	if err == nil {
		inst.Kill()
		t.Fatal("start succeeded")
	}
	if !strings.Contains(err.Error(), "Unable to create the block device") || !strings.Contains(err.Error(), "drives") {
		t.Errorf("err %v: want the step and the fault_message", err)
	}
	assertGone(t, fakePid(t, spec))
	got := callPaths(readCalls(t, spec))
	want := []string{"PUT /machine-config", "PUT /boot-source", "PUT /drives/fgroot"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	if _, err := os.Stat(APISocketPath(spec)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API socket left behind: %v", err)
	}
}

func TestStartAPITimeoutKillsProcess(t *testing.T) {
	spec := testSpec(t, fakeOptions{NoAPI: true})
	b := fakeBackend()
	b.APITimeout = 300 * time.Millisecond
	_, err := b.Start(startCtx(t), spec)
	if err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("err %v", err)
	}
	assertGone(t, fakePid(t, spec))
}

func TestStartProcessExitsEarly(t *testing.T) {
	falseBin, err := exec.LookPath("false")
	if err != nil {
		t.Skip("no false(1)")
	}
	_, err = (&Backend{Binary: falseBin, Version: Version{1, 16, 1, ""}}).Start(startCtx(t), testSpec(t, fakeOptions{}))
	if err == nil || !strings.Contains(err.Error(), "exited before its API came up") {
		t.Fatalf("err %v", err)
	}
}

func TestKill(t *testing.T) {
	spec := testSpec(t, fakeOptions{StayUp: true})
	inst, err := fakeBackend().Start(startCtx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(inst.Pid(), 0); err != nil {
		t.Fatalf("process not running after Start: %v", err)
	}
	// The fake prints its boot line just after InstanceStart returns: wait for it (bounded)
	// so that the kill lands on a booted VM.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if console, _ := os.ReadFile(spec.ConsoleLog); strings.Contains(string(console), "fake guest booted") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fake guest never printed its boot line")
		}
	}
	if err := inst.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := inst.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("wait after kill: %v", err)
	}
	if err := inst.Kill(); err != nil {
		t.Errorf("second kill: %v", err)
	}
	assertGone(t, inst.Pid())
	// The console still has what the process wrote before it died.
	if console, _ := os.ReadFile(spec.ConsoleLog); !strings.Contains(string(console), "fake guest booted") {
		t.Errorf("console log: %q", console)
	}
}

func TestCustomSteps(t *testing.T) {
	spec := testSpec(t, fakeOptions{})
	var state string
	b := fakeBackend()
	b.Steps = DefaultSteps().Remove(StepVsock).InsertBefore(StepInstanceStart, Step{
		Name: "describe",
		Do: func(ctx context.Context, api operations.ClientIface, _ *Config) error {
			ok, err := api.DescribeInstance(operations.NewDescribeInstanceParamsWithContext(ctx))
			if err != nil {
				return apiError(err)
			}
			state = *ok.Payload.State
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
	if state != "Not started" {
		t.Errorf("state before boot: %q", state)
	}
	got := callPaths(readCalls(t, spec))
	if got[len(got)-2] != "GET /" || strings.Contains(strings.Join(got, ","), "/vsock") {
		t.Errorf("calls %q", got)
	}
}

func TestStepsEditing(t *testing.T) {
	def := DefaultSteps()
	want := []string{StepMachineConfig, StepBootSource, StepDrives, StepNetworkInterfaces, StepVsock, StepInstanceStart}
	if !reflect.DeepEqual(def.Names(), want) {
		t.Fatalf("default %q", def.Names())
	}
	nop := func(context.Context, operations.ClientIface, *Config) error { return nil }
	s := def.InsertAfter(StepBootSource, Step{"entropy", nop}).
		InsertBefore(StepMachineConfig, Step{"logger", nop}).
		InsertAfter("missing", Step{"last", nop}).
		Remove(StepNetworkInterfaces).
		Replace(Step{StepVsock, nop})
	wantEdited := []string{"logger", StepMachineConfig, StepBootSource, "entropy", StepDrives, StepVsock, StepInstanceStart, "last"}
	if !reflect.DeepEqual(s.Names(), wantEdited) {
		t.Errorf("edited %q, want %q", s.Names(), wantEdited)
	}
	if !reflect.DeepEqual(def.Names(), want) {
		t.Errorf("editing changed the original: %q", def.Names())
	}
}

// TestFakeAPIContract drives the fake in-process through the SDK client, checking the
// ordering rules the Start tests rely on.
func TestFakeAPIContract(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: newFakeAPI(fakeOptions{})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	api, tr := newAPIClient(sock)
	t.Cleanup(tr.CloseIdleConnections)
	ctx := startCtx(t)
	cfg, err := NewConfig(testSpec(t, fakeOptions{}))
	if err != nil {
		t.Fatal(err)
	}

	if err := instanceStart(ctx, api, cfg); err == nil || !strings.Contains(err.Error(), "without kernel configuration") {
		t.Errorf("InstanceStart before boot-source: %v", err)
	}
	if err := putBootSource(ctx, api, cfg); err != nil {
		t.Fatal(err)
	}
	if err := instanceStart(ctx, api, cfg); err == nil || !strings.Contains(err.Error(), "machine configuration") {
		t.Errorf("InstanceStart before machine-config: %v", err)
	}
	// A body the SDK's validation would have stopped: the fake rejects it too.
	client := &http.Client{Transport: tr}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://localhost/machine-config", strings.NewReader(`{"vcpu_count":0,"mem_size_mib":128}`))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), "fault_message") {
		t.Errorf("invalid machine-config: %d %s", resp.StatusCode, msg)
	}
	if err := putMachineConfig(ctx, api, cfg); err != nil {
		t.Fatal(err)
	}
	if err := instanceStart(ctx, api, cfg); err != nil {
		t.Fatal(err)
	}
	if err := putDrives(ctx, api, cfg); err == nil || !strings.Contains(err.Error(), "after starting") {
		t.Errorf("drive after start: %v", err)
	}
	ok, err := api.DescribeInstance(operations.NewDescribeInstanceParamsWithContext(ctx))
	if err != nil || *ok.Payload.State != "Running" {
		t.Errorf("describe: %v", err)
	}
}

func TestNew(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, "firecracker-does-not-exist-here"); err == nil || !strings.Contains(err.Error(), "run firegopher firecracker install") {
		t.Errorf("missing binary: %v", err)
	}
	b, err := New(ctx, os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if b.Name() != "firecracker" || b.Binary == "" || b.Jailer != nil {
		t.Errorf("backend %+v", b)
	}
	var _ vmm.Backend = b
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
