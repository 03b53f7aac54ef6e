//go:build linux

package guest

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// fakeHost is the host's end of a session's control channel.
type fakeHost struct {
	t      *testing.T
	conn   *agent.Conn
	frames chan agent.Frame // everything the guest sent, in order
	close  func()
}

// newSession starts a session (not as PID 1: the test binary is an ordinary process) with a
// fake host on the other end of an in-memory channel.
func newSession(t *testing.T, cfg *vmconfig.Config) (*Session, *fakeHost) {
	guestEnd, hostEnd := net.Pipe()
	var logs lockedBuffer
	s := NewSession(guestEnd, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	s.AckTimeout = time.Hour // Report may only return on the Ack (or a closed channel)
	h := &fakeHost{t: t, conn: agent.NewConn(hostEnd), frames: make(chan agent.Frame, 1024),
		close: func() { hostEnd.Close() }}
	go func() {
		defer close(h.frames)
		for {
			f, err := h.conn.Receive()
			if err != nil {
				return
			}
			h.frames <- f
		}
	}()
	t.Cleanup(func() {
		guestEnd.Close()
		hostEnd.Close()
		if t.Failed() {
			t.Logf("guest log:\n%s", logs.String())
		}
	})
	return s, h
}

func appConfig(argv ...string) *vmconfig.Config {
	return &vmconfig.Config{Version: vmconfig.Version, Mode: vmconfig.ModeApp, Hostname: "fake",
		Root: vmconfig.Disk{FSType: "ext4"}, Cmd: argv}
}

func (h *fakeHost) next() agent.Frame {
	h.t.Helper()
	f, ok := <-h.frames
	if !ok {
		h.t.Fatal("the guest closed the channel")
	}
	return f
}

// until collects stream's output up to its Exit frame. Frames of other streams are dropped.
func (h *fakeHost) until(stream uint32) (stdout, stderr string, exit agent.Exit) {
	h.t.Helper()
	var out, errOut strings.Builder
	for {
		f := h.next()
		if f.Stream != stream {
			continue
		}
		switch f.Kind {
		case agent.KindStdout:
			out.Write(f.Payload)
		case agent.KindStderr:
			errOut.Write(f.Payload)
		case agent.KindExit:
			if err := f.Decode(&exit); err != nil {
				h.t.Fatal(err)
			}
			return out.String(), errOut.String(), exit
		default:
			h.t.Fatalf("unexpected %s frame on stream %d", f.Kind, f.Stream)
		}
	}
}

func (h *fakeHost) send(kind agent.Kind, stream uint32, payload []byte) {
	h.t.Helper()
	if err := h.conn.Send(kind, stream, payload); err != nil {
		h.t.Fatal(err)
	}
}

// The fake guest's whole life: Hello, the workload's output and exit, Report until the Ack.
func TestSessionRunsTheWorkloadAndReportsItsExit(t *testing.T) {
	s, h := newSession(t, appConfig("sh", "-c", "echo hi; echo err >&2; exit 3"))
	reported := make(chan struct{})
	go func() {
		if err := s.Hello(); err != nil {
			t.Error(err)
		}
		s.Serve()
		s.Report(s.RunMain("/"))
		close(reported)
	}()
	if f := h.next(); f.Kind != agent.KindHello {
		t.Fatalf("first frame is %s, want hello", f.Kind)
	}
	stdout, stderr, exit := h.until(agent.MainStream)
	if stdout != "hi\n" || stderr != "err\n" || exit != (agent.Exit{Code: 3}) {
		t.Fatalf("stdout %q stderr %q exit %+v", stdout, stderr, exit)
	}
	select {
	case <-reported:
		t.Fatal("Report returned before the host acknowledged the exit")
	default:
	}
	h.send(agent.KindAck, agent.MainStream, nil)
	<-reported
}

func TestSessionGivesTheWorkloadItsEnvironment(t *testing.T) {
	dir := t.TempDir()
	cfg := appConfig("sh", "-c", `echo "$HOME $HOSTNAME $A"; pwd`)
	cfg.Env, cfg.WorkDir = []string{"A=1"}, dir
	s, h := newSession(t, cfg)
	go func() { s.Report(s.RunMain("/")) }() // the Exit frame ends h.until
	if stdout, _, exit := h.until(agent.MainStream); stdout != "/root fake 1\n"+dir+"\n" || exit.Code != 0 {
		t.Fatalf("stdout %q exit %+v", stdout, exit)
	}
}

func TestSessionStopEndsTheWorkloadWith143(t *testing.T) {
	s, h := newSession(t, appConfig("sh", "-c", "echo started; exec sleep 100"))
	go func() { s.Report(s.RunMain("/")) }() // the Exit frame ends h.until
	if f := h.next(); f.Kind != agent.KindStdout || string(f.Payload) != "started\n" {
		t.Fatalf("got %s %q", f.Kind, f.Payload)
	}
	s.Stop()
	if _, _, exit := h.until(agent.MainStream); exit != (agent.Exit{Code: 143, Signal: 15}) {
		t.Fatalf("exit %+v, want 143 by SIGTERM", exit)
	}
}

// A stop that arrives before the workload starts (init still booting) is not lost.
func TestSessionStopBeforeTheWorkloadStarts(t *testing.T) {
	s, h := newSession(t, appConfig("sleep", "100"))
	s.Stop()
	go func() { s.Report(s.RunMain("/")) }() // the Exit frame ends h.until
	if _, _, exit := h.until(agent.MainStream); exit.Code != 143 {
		t.Fatalf("exit %+v, want 143", exit)
	}
}

func TestSessionExecRunsOnItsOwnStream(t *testing.T) {
	cfg := appConfig("true")
	cfg.Env = []string{"A=from-config"}
	s, h := newSession(t, cfg)
	s.Serve()
	h.send(agent.KindExec, 7, []byte(`{"argv":["sh","-c","echo $A $B; echo e >&2; exit 5"],"env":["B=from-exec"]}`))
	if stdout, stderr, exit := h.until(7); stdout != "from-config from-exec\n" || stderr != "e\n" || exit.Code != 5 {
		t.Fatalf("stdout %q stderr %q exit %+v", stdout, stderr, exit)
	}
	// Signals from the host reach the exec's process.
	h.send(agent.KindExec, 8, []byte(`{"argv":["sh","-c","echo started; exec sleep 100"]}`))
	if f := h.next(); f.Stream != 8 || string(f.Payload) != "started\n" {
		t.Fatalf("got %s on %d: %q", f.Kind, f.Stream, f.Payload)
	}
	h.send(agent.KindSignal, 8, []byte{15})
	if _, _, exit := h.until(8); exit.Code != 143 {
		t.Fatalf("signalled exec: %+v", exit)
	}
	h.send(agent.KindExec, 9, []byte(`{"argv":[]}`))
	if _, _, exit := h.until(9); exit.Code != 125 || !strings.Contains(exit.Error, "empty argv") {
		t.Fatalf("empty exec: %+v", exit)
	}
}

// A boot that fails before it has a config still reports, and the Ack still ends the wait
// though nothing was reading the channel before.
func TestSessionWithoutConfigReportsAndRefusesWork(t *testing.T) {
	s, h := newSession(t, nil)
	if exit := s.RunMain("/"); exit.Code != 125 {
		t.Fatalf("RunMain without config: %+v", exit)
	}
	reported := make(chan struct{})
	go func() { s.Report(agent.Exit{Code: 125, Error: "read config: broken"}); close(reported) }()
	if _, _, exit := h.until(agent.MainStream); exit.Error != "read config: broken" {
		t.Fatalf("exit %+v", exit)
	}
	h.send(agent.KindExec, 4, []byte(`{"argv":["true"]}`))
	if _, _, exit := h.until(4); exit.Code != 125 || !strings.Contains(exit.Error, "no config") {
		t.Fatalf("exec without config: %+v", exit)
	}
	h.send(agent.KindAck, agent.MainStream, nil)
	<-reported
}

func TestSessionReportEndsWhenTheHostIsGone(t *testing.T) {
	s, h := newSession(t, appConfig("true"))
	s.Serve()
	reported := make(chan struct{})
	go func() { s.Report(agent.Exit{Code: 0}); close(reported) }()
	if f := h.next(); f.Kind != agent.KindExit {
		t.Fatalf("got %s", f.Kind)
	}
	h.close()
	<-reported
}

// blockedChannel is a virtio-serial port whose host went away: reads wait, writes block.
type blockedChannel struct{ never chan struct{} }

func (b blockedChannel) Read([]byte) (int, error)  { <-b.never; return 0, nil }
func (b blockedChannel) Write([]byte) (int, error) { <-b.never; return 0, nil }

func TestSessionReportEndsWhenWritesBlock(t *testing.T) {
	s := NewSession(blockedChannel{make(chan struct{})}, nil, slog.New(slog.DiscardHandler))
	s.AckTimeout = 200 * time.Millisecond
	done := make(chan struct{})
	go func() { s.Report(agent.Exit{Code: 3}); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Report blocked on a channel that does not take writes: the VM would never end")
	}
}
