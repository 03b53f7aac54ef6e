//go:build linux

package guest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/exitcode"
	"github.com/firegopher/firegopher/internal/tarcopy"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// Session is the guest's side of the control protocol: it greets the host, runs the
// config's workload and the host's extra commands (exec) with their output on the channel,
// passes signals on, and reports the workload's exit. firegopher-init runs one as the VM's
// PID 1; a fake guest (host-side tests without a VM) runs one as an ordinary process.
type Session struct {
	// Init makes the session the VM's PID 1: one reap loop collects every orphan, and the
	// main workload's end takes every other process in the VM with it (SIGTERM, Grace,
	// SIGKILL, until none is left). Otherwise each process is waited for by pid and what a
	// command leaves behind is killed by process group. Set it before Serve.
	Init bool
	// Grace is how long leftovers of a workload get between SIGTERM and SIGKILL.
	Grace time.Duration
	// AckTimeout bounds Report's wait for the host's Ack.
	AckTimeout time.Duration

	ctl *agent.Conn
	cfg *vmconfig.Config
	log *slog.Logger

	serve      sync.Once
	acked      chan struct{}
	hostGone   chan struct{}
	reaperOnce sync.Once
	reaper     *Reaper

	mu      sync.Mutex // guards streams and root: the reader adds streams while execs run
	streams map[uint32]*stream
	root    string
}

// stream is one process's link to the host: its signals, and its stdin or terminal.
type stream struct {
	signals chan unix.Signal
	stdin   *stdinPump // nil: stdin is /dev/null
	isTTY   bool
	pipe    *os.File // the stdin pipe's read end, for the process
	tty     *PTY
	size    *agent.Resize // the terminal's size asked for before it existed
}

// newStream is a stream whose stdin (if any) queues until open gives it a process end.
func (s *Session) newStream(id uint32, stdin bool, tty *agent.Resize) *stream {
	st := &stream{signals: make(chan unix.Signal, 8), isTTY: tty != nil, size: tty}
	if stdin || tty != nil {
		st.stdin = newStdinPump(tty != nil, func(n int) {
			if err := s.ctl.Send(agent.KindWindow, id, agent.WindowPayload(n)); err != nil {
				s.log.Debug("control channel: window", "stream", id, "error", err)
			}
		})
	}
	return st
}

// open makes the stream's stdin pipe or terminal, just before its process starts (a
// terminal needs devpts, which the main workload's stream predates).
func (st *stream) open() error {
	switch {
	case st.isTTY:
		p, err := OpenPTY()
		if err != nil {
			return err
		}
		if st.size != nil {
			p.Resize(st.size.Rows, st.size.Cols)
		}
		st.tty = p
		st.stdin.attach(p.Master)
	case st.stdin != nil:
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		st.pipe = r
		st.stdin.attach(w)
	}
	return nil
}

// end stops feeding a stream whose process is gone.
func (st *stream) end() {
	if st != nil && st.stdin != nil {
		st.stdin.stop()
	}
}

// NewSession prepares a session over ctl. cfg may be nil (a boot that failed before reading
// it): such a session can greet and report, and refuses execs.
func NewSession(ctl io.ReadWriter, cfg *vmconfig.Config, log *slog.Logger) *Session {
	s := &Session{
		Grace:      5 * time.Second,
		AckTimeout: 10 * time.Second,
		ctl:        agent.NewConn(ctl),
		cfg:        cfg,
		log:        log,
		acked:      make(chan struct{}),
		hostGone:   make(chan struct{}),
		root:       "/",
	}
	// The main stream exists from the start: a stop, stdin or a terminal size sent before
	// the workload starts reaches it as soon as it does.
	var stdin bool
	var tty *agent.Resize
	if cfg != nil {
		stdin = cfg.Stdin
		if cfg.TTY != nil {
			tty = &agent.Resize{Rows: cfg.TTY.Rows, Cols: cfg.TTY.Cols}
		}
	}
	s.streams = map[uint32]*stream{agent.MainStream: s.newStream(agent.MainStream, stdin, tty)}
	return s
}

// Hello sends the first frame: the guest is up and the channel works.
func (s *Session) Hello() error {
	return s.ctl.Send(agent.KindHello, agent.MainStream, nil)
}

// Serve starts reading the host's frames in the background: the Ack of the exit, signals,
// execs. Only one session may read the channel (init's stage 1 never does: its session,
// made before the config, only greets and reports). Calling it again does nothing.
func (s *Session) Serve() {
	s.serve.Do(func() { go s.readHost() })
}

func (s *Session) readHost() {
	defer close(s.hostGone)
	var ackOnce sync.Once
	for {
		f, err := s.ctl.Receive()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Warn("control channel", "error", err)
			}
			return
		}
		switch f.Kind {
		case agent.KindAck:
			if f.Stream == agent.MainStream {
				ackOnce.Do(func() { close(s.acked) })
			}
		case agent.KindSignal:
			if len(f.Payload) == 1 {
				s.signal(f.Stream, unix.Signal(f.Payload[0]))
			}
		case agent.KindExec:
			var e agent.Exec
			err := f.Decode(&e)
			if err == nil && len(e.Argv) == 0 && e.Copy == nil {
				err = errors.New("empty argv")
			}
			if err == nil && s.cfg == nil {
				err = errors.New("the guest has no config")
			}
			if err != nil {
				s.send(agent.KindExit, f.Stream, agent.Exit{Code: exitcode.FiregopherError, Error: fmt.Sprintf("bad exec request: %v", err)})
				continue
			}
			// Made here, before the next frame is read: its stdin may follow at once.
			s.mu.Lock()
			s.streams[f.Stream] = s.newStream(f.Stream, e.Stdin, e.TTY)
			s.mu.Unlock()
			go s.exec(f.Stream, e)
		case agent.KindStdin:
			if st := s.stream(f.Stream); st != nil && st.stdin != nil {
				st.stdin.push(f.Payload)
			}
		case agent.KindResize:
			var r agent.Resize
			if f.Decode(&r) == nil {
				s.resize(f.Stream, r)
			}
		default:
			s.log.Warn("control channel: unexpected frame", "kind", f.Kind, "stream", f.Stream)
		}
	}
}

// RunMain runs the config's command as the main workload and returns how it ended. root
// is where the image's /etc/passwd and /etc/group are ("/" in the guest).
func (s *Session) RunMain(root string) agent.Exit {
	if s.cfg == nil || len(s.cfg.Cmd) == 0 {
		return agent.Exit{Code: exitcode.FiregopherError, Error: "run workload: the config has no command"}
	}
	s.mu.Lock()
	s.root = root
	s.mu.Unlock()
	w, err := s.workload(agent.MainStream, s.cfg.Cmd, s.cfg.Env, s.cfg.WorkDir, s.cfg.User)
	if err != nil {
		return agent.Exit{Code: exitcode.FiregopherError, Error: "prepare workload: " + err.Error()}
	}
	if s.Init {
		w.KillRest, w.WaitAllGone = KillAllButInit, true
	}
	exit := w.Run()
	s.stream(agent.MainStream).end()
	return exit
}

// Stop asks the main workload to end: SIGTERM to its process (queued if it has not started
// yet). Its end is the VM's end, leftovers get the usual Grace.
func (s *Session) Stop() { s.Signal(unix.SIGTERM) }

// Signal passes sig to the main workload's process.
func (s *Session) Signal(sig unix.Signal) { s.signal(agent.MainStream, sig) }

func (s *Session) signal(id uint32, sig unix.Signal) {
	var ch chan unix.Signal
	if st := s.stream(id); st != nil {
		ch = st.signals
	}
	select {
	case ch <- sig: // a nil ch (no such stream) never takes it
	default: // its queue is full: the process is not reading signals any more
	}
}

// resize sizes a stream's terminal, or remembers the size for when it exists.
func (s *Session) resize(id uint32, r agent.Resize) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	switch {
	case st == nil || !st.isTTY:
	case st.tty == nil:
		st.size = &r
	default:
		if err := st.tty.Resize(r.Rows, r.Cols); err != nil {
			s.log.Warn("resize terminal", "stream", id, "error", err)
		}
	}
}

func (s *Session) stream(id uint32) *stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[id]
}

// Report sends the main workload's exit and waits, at most AckTimeout, until the host has
// acknowledged it; after that the guest may end (reboot) without losing anything.
func (s *Session) Report(e agent.Exit) {
	if e.Error != "" {
		s.log.Error("reporting a failure", "code", e.Code, "error", e.Error)
	}
	// The send runs aside: with its host gone a virtio-serial write blocks for ever (the
	// port waits for the host to reconnect), and the VM must still end.
	sent := make(chan error, 1)
	go func() { sent <- s.ctl.SendJSON(agent.KindExit, agent.MainStream, e) }()
	s.Serve() // a boot that failed early has nothing reading the channel yet
	deadline := time.NewTimer(s.AckTimeout)
	defer deadline.Stop()
	select {
	case err := <-sent:
		if err != nil {
			s.log.Error("report exit status", "error", err)
			return
		}
	case <-s.hostGone:
		s.log.Error("control channel closed before the exit status was sent")
		return
	case <-deadline.C:
		s.log.Error("could not send the exit status", "waited", s.AckTimeout)
		return
	}
	select {
	case <-s.acked:
	case <-s.hostGone:
		s.log.Error("control channel closed before the host acknowledged the exit status")
	case <-deadline.C:
		s.log.Error("host did not acknowledge the exit status", "waited", s.AckTimeout)
	}
}

// copy does a `cp` in the guest on its own stream: a tar stream of Path out on stdout, or
// one from stdin extracted into the directory Path.
func (s *Session) copy(id uint32, c *agent.Copy) agent.Exit {
	p := path.Clean(c.Path)
	if !path.IsAbs(c.Path) {
		return agent.Exit{Code: 1, Error: fmt.Sprintf("cp: %q is not an absolute path in the guest", c.Path)}
	}
	s.mu.Lock()
	st := s.streams[id]
	err := st.open()
	s.mu.Unlock()
	if err != nil {
		return agent.Exit{Code: 1, Error: "cp: " + err.Error()}
	}
	if c.Out {
		err = tarcopy.Write(agent.StreamWriter{Conn: s.ctl, Kind: agent.KindStdout, Stream: id}, p)
	} else if st.pipe == nil {
		err = errors.New("no stdin to read the files from")
	} else {
		err = tarcopy.Extract(st.pipe, p)
		st.pipe.Close()
	}
	if err != nil {
		return agent.Exit{Code: 1, Error: "cp: " + err.Error()}
	}
	return agent.Exit{}
}

// exec runs an extra command beside the workload on its own stream.
func (s *Session) exec(stream uint32, e agent.Exec) {
	if e.Copy != nil {
		exit := s.copy(stream, e.Copy)
		s.mu.Lock()
		st := s.streams[stream]
		delete(s.streams, stream)
		s.mu.Unlock()
		st.end()
		s.send(agent.KindExit, stream, exit)
		return
	}
	env := append(append([]string(nil), s.cfg.Env...), e.Env...)
	user := e.User
	if user == "" {
		user = s.cfg.User
	}
	w, err := s.workload(stream, e.Argv, env, e.WorkDir, user)
	var exit agent.Exit
	if err != nil {
		exit = agent.Exit{Code: exitcode.FiregopherError, Error: err.Error()}
	} else {
		exit = w.Run()
	}
	s.mu.Lock()
	st := s.streams[stream]
	delete(s.streams, stream)
	s.mu.Unlock()
	st.end()
	s.send(agent.KindExit, stream, exit)
}

func (s *Session) send(kind agent.Kind, stream uint32, v any) {
	if err := s.ctl.SendJSON(kind, stream, v); err != nil {
		s.log.Error("control channel: send", "kind", kind, "stream", stream, "error", err)
	}
}

// workload prepares a command with its user, environment and working directory, its output
// on stream; it is cleaned up by process group (the main workload's caller widens that).
func (s *Session) workload(id uint32, argv, env []string, dir, user string) (*Workload, error) {
	s.mu.Lock()
	root, st := s.root, s.streams[id]
	err := st.open()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	w := &Workload{
		Argv:     argv,
		Env:      append([]string(nil), env...),
		Dir:      dir,
		Stdout:   agent.StreamWriter{Conn: s.ctl, Kind: agent.KindStdout, Stream: id},
		Stderr:   agent.StreamWriter{Conn: s.ctl, Kind: agent.KindStderr, Stream: id},
		Reaper:   s.reaperIfInit(),
		Signals:  st.signals,
		Stdin:    st.pipe,
		TTY:      st.tty,
		Grace:    s.Grace,
		KillRest: KillGroup,
	}
	home := "/root"
	if user != "" {
		u, err := LookupUser(root, user)
		if err != nil {
			return nil, err
		}
		// A workload given a user must not regain what it dropped.
		w.Cred, home, w.NoNewPrivs = &u.Cred, u.Home, true
		if u.Name != "" {
			w.Env = withDefault(w.Env, "USER", u.Name)
		}
	}
	w.Env = withDefault(w.Env, "HOME", home)
	w.Env = withDefault(w.Env, "HOSTNAME", s.cfg.Hostname)
	if w.Dir == "" {
		w.Dir = "/"
	}
	return w, nil
}

// reaperIfInit is PID 1's reap loop, started with the first process; nil outside a VM.
func (s *Session) reaperIfInit() *Reaper {
	if !s.Init {
		return nil
	}
	s.reaperOnce.Do(func() { s.reaper = NewReaper() })
	return s.reaper
}

func withDefault(env []string, key, value string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return env
		}
	}
	return append(env, key+"="+value)
}
