// Package vmmtest is the conformance suite of the vmm seam, in the manner of containerd's
// snapshotter suite: every backend (and the fake one) must pass it. A backend's test
// supplies a Harness that knows how to make a bootable Spec for a given guest config.
package vmmtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
)

// Harness adapts a backend to the suite.
type Harness struct {
	Backend vmm.Backend
	// Spec returns a Spec whose guest runs cfg (cfg.Root is filled from the backend's Caps),
	// with its files in dir.
	Spec func(t *testing.T, dir string, cfg vmconfig.Config) vmm.Spec
	// BootTimeout bounds a boot up to the guest's first frame (a TCG boot takes seconds).
	BootTimeout time.Duration
}

// endTimeout bounds how long a VMM may take to exit once its guest is done; it is well below
// any VMM's own timeouts, so a guest that powers off instead of rebooting fails the suite.
const endTimeout = 5 * time.Second

// ackLossTimeout bounds the end of a VM whose host end of the channel was lost: init waits
// a bounded time for the acknowledgement (10 s), then reboots anyway.
const ackLossTimeout = 20 * time.Second

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if h.BootTimeout == 0 {
		h.BootTimeout = time.Minute
	}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"OutputAndExitCode", testOutputAndExitCode},
		{"Kill", testKill},
		{"GracefulShutdown", testShutdown},
		{"VMMCrash", testCrash},
		{"ChannelLoss", testChannelLoss},
		{"Exec", testExec},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

// vm is one started instance and its control connection.
type vm struct {
	inst vmm.Instance
	conn net.Conn
	ctl  *agent.Conn
}

func start(t *testing.T, h Harness, cmd ...string) *vm {
	t.Helper()
	dir := t.TempDir()
	cfg := vmconfig.Config{
		Version: vmconfig.Version, Mode: vmconfig.ModeApp, Hostname: "conformance",
		Root: vmconfig.Disk{FSType: "ext4"}, Cmd: cmd,
	}
	if h.Backend.Caps().DiskSerials {
		cfg.Root.Serial = "root"
	}
	spec := h.Spec(t, dir, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), h.BootTimeout)
	defer cancel()
	inst, err := h.Backend.Start(ctx, spec)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		inst.Kill()
		inst.Wait()
	})
	conn, err := inst.Control(ctx)
	if err != nil {
		t.Fatalf("control: %v%s", err, console(spec))
	}
	t.Cleanup(func() { conn.Close() })
	v := &vm{inst: inst, conn: conn, ctl: agent.NewConn(conn)}
	f := v.next(t, h.BootTimeout)
	if f.Kind != agent.KindHello {
		t.Fatalf("first frame %s, want hello", f.Kind)
	}
	return v
}

func console(spec vmm.Spec) string {
	b, _ := os.ReadFile(spec.ConsoleLog)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "\nconsole:\n" + strings.Join(lines, "\n")
}

// next reads one frame within d.
func (v *vm) next(t *testing.T, d time.Duration) agent.Frame {
	t.Helper()
	v.conn.SetReadDeadline(time.Now().Add(d))
	f, err := v.ctl.Receive()
	if err != nil {
		t.Fatalf("control channel: %v", err)
	}
	return f
}

// output collects the main stream's output until its exit frame.
func (v *vm) output(t *testing.T, d time.Duration) (stdout, stderr string, exit agent.Exit) {
	t.Helper()
	deadline := time.Now().Add(d)
	var out, errOut strings.Builder
	for {
		f := v.next(t, time.Until(deadline))
		if f.Stream != agent.MainStream {
			continue
		}
		switch f.Kind {
		case agent.KindStdout:
			out.Write(f.Payload)
		case agent.KindStderr:
			errOut.Write(f.Payload)
		case agent.KindExit:
			if err := f.Decode(&exit); err != nil {
				t.Fatal(err)
			}
			return out.String(), errOut.String(), exit
		}
	}
}

// waitFor reads the main stream's stdout until it contains s.
func (v *vm) waitFor(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var out strings.Builder
	for !strings.Contains(out.String(), s) {
		f := v.next(t, time.Until(deadline))
		if f.Kind == agent.KindExit {
			t.Fatalf("workload exited before printing %q: %s", s, f.Payload)
		}
		if f.Kind == agent.KindStdout {
			out.Write(f.Payload)
		}
	}
}

// ended waits up to d for the VMM to exit and returns Wait's error.
func (v *vm) ended(t *testing.T, d time.Duration, what string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- v.inst.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("the VMM did not exit within %s of %s", d, what)
		return nil
	}
}

func testOutputAndExitCode(t *testing.T, h Harness) {
	v := start(t, h, "sh", "-c", "echo out; echo err >&2; exit 3")
	stdout, stderr, exit := v.output(t, h.BootTimeout)
	if stdout != "out\n" || stderr != "err\n" || exit.Code != 3 {
		t.Fatalf("stdout %q stderr %q exit %+v; want out, err, 3", stdout, stderr, exit)
	}
	if err := v.ctl.Send(agent.KindAck, agent.MainStream, nil); err != nil {
		t.Fatal(err)
	}
	if err := v.ended(t, endTimeout, "the acknowledged exit"); err != nil {
		t.Fatalf("a guest that reboots ends its VMM cleanly: %v", err)
	}
}

func testKill(t *testing.T, h Harness) {
	v := start(t, h, "sleep", "1000")
	if err := v.inst.Kill(); err != nil {
		t.Fatal(err)
	}
	v.ended(t, endTimeout, "Kill")
	v.conn.SetReadDeadline(time.Now().Add(endTimeout))
	if _, err := io.Copy(io.Discard, v.conn); err != nil && !isClosed(err) {
		t.Fatalf("the channel must end when the VMM is killed: %v", err)
	}
}

func testShutdown(t *testing.T, h Harness) {
	v := start(t, h, "sh", "-c", "echo ready; exec sleep 1000")
	v.waitFor(t, "ready", h.BootTimeout)
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shut <- v.inst.Shutdown(ctx)
	}()
	_, _, exit := v.output(t, 30*time.Second)
	if exit.Code != 128+int(syscall.SIGTERM) {
		t.Fatalf("a graceful shutdown TERMs the workload: exit %+v, want 143", exit)
	}
	v.ctl.Send(agent.KindAck, agent.MainStream, nil)
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(endTimeout + 30*time.Second):
		t.Fatal("shutdown did not return")
	}
	if err := v.inst.Wait(); err != nil {
		t.Fatalf("after a graceful shutdown the VMM exits cleanly: %v", err)
	}
}

func testCrash(t *testing.T, h Harness) {
	v := start(t, h, "sh", "-c", "echo ready; exec sleep 1000")
	v.waitFor(t, "ready", h.BootTimeout)
	if err := syscall.Kill(v.inst.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := v.ended(t, endTimeout, "SIGKILL"); err == nil {
		t.Fatal("a VMM killed from outside must not look like a clean end")
	}
	v.conn.SetReadDeadline(time.Now().Add(endTimeout))
	if _, err := io.Copy(io.Discard, v.conn); err != nil && !isClosed(err) {
		t.Fatalf("the channel must end with the VMM: %v", err)
	}
}

func testChannelLoss(t *testing.T, h Harness) {
	v := start(t, h, "sh", "-c", "echo ready; exit 5")
	v.waitFor(t, "ready", h.BootTimeout)
	v.conn.Close()
	if err := v.ended(t, ackLossTimeout, "losing the host end of the channel"); err != nil {
		t.Fatalf("a guest whose host went away still ends its VM cleanly: %v", err)
	}
}

func testExec(t *testing.T, h Harness) {
	v := start(t, h, "sh", "-c", "echo ready; exec sleep 1000")
	v.waitFor(t, "ready", h.BootTimeout)
	const stream = 7
	if err := v.ctl.SendJSON(agent.KindExec, stream, agent.Exec{Argv: []string{"sh", "-c", "echo from-exec; exit 4"}}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for {
		f := v.next(t, 30*time.Second)
		if f.Stream != stream {
			continue
		}
		if f.Kind == agent.KindStdout {
			out.Write(f.Payload)
		}
		if f.Kind == agent.KindExit {
			var e agent.Exit
			f.Decode(&e)
			if e.Code != 4 || out.String() != "from-exec\n" {
				t.Fatalf("exec: output %q exit %+v, want from-exec and 4", out.String(), e)
			}
			break
		}
	}
	v.ctl.Send(agent.KindSignal, agent.MainStream, []byte{byte(syscall.SIGKILL)})
	_, _, exit := v.output(t, 30*time.Second)
	if exit.Code != 128+int(syscall.SIGKILL) {
		t.Fatalf("main workload after SIGKILL: %+v", exit)
	}
	v.ctl.Send(agent.KindAck, agent.MainStream, nil)
	if err := v.ended(t, endTimeout, "the acknowledged exit"); err != nil {
		t.Fatal(err)
	}
}

// isClosed: the peer went away (a timeout is not that).
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// WriteFile is a small helper for harnesses.
func WriteFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(fmt.Errorf("harness: %w", err))
	}
	return p
}
