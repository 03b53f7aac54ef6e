//go:build linux

package fake

import (
	"time"

	"sync"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/guest"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// session is the fake guest's side of the control channel.
type session struct {
	ctl     *agent.Conn
	cfg     *vmconfig.Config
	reaper  *guest.Reaper
	acked   chan struct{}
	mu      sync.Mutex
	signals map[uint32]chan unix.Signal
}

func (s *session) signal(stream uint32, sig unix.Signal) {
	s.mu.Lock()
	ch := s.signals[stream]
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- sig:
		default:
		}
	}
}

func (s *session) readHost() {
	for {
		f, err := s.ctl.Receive()
		if err != nil {
			return
		}
		switch f.Kind {
		case agent.KindAck:
			if f.Stream == agent.MainStream {
				close(s.acked)
			}
		case agent.KindSignal:
			if len(f.Payload) == 1 {
				s.signal(f.Stream, unix.Signal(f.Payload[0]))
			}
		case agent.KindExec:
			var e agent.Exec
			if err := f.Decode(&e); err != nil || len(e.Argv) == 0 {
				s.ctl.SendJSON(agent.KindExit, f.Stream, agent.Exit{Code: 125, Error: "bad exec request"})
				continue
			}
			s.mu.Lock()
			s.signals[f.Stream] = make(chan unix.Signal, 8)
			s.mu.Unlock()
			go func(stream uint32) {
				w := s.workload(stream, e.Argv, append(append([]string(nil), s.cfg.Env...), e.Env...), e.WorkDir)
				exit := w.Run()
				s.mu.Lock()
				delete(s.signals, stream)
				s.mu.Unlock()
				s.ctl.SendJSON(agent.KindExit, stream, exit)
			}(f.Stream)
		}
	}
}

func (s *session) workload(stream uint32, argv, env []string, dir string) *guest.Workload {
	if dir == "" {
		dir = "/"
	}
	s.mu.Lock()
	sigs := s.signals[stream]
	s.mu.Unlock()
	return &guest.Workload{
		Argv: argv, Env: env, Dir: dir,
		Stdout:   agent.StreamWriter{Conn: s.ctl, Kind: agent.KindStdout, Stream: stream},
		Stderr:   agent.StreamWriter{Conn: s.ctl, Kind: agent.KindStderr, Stream: stream},
		Reaper:   s.reaper,
		Grace:    5 * time.Second, // also bounds the drain of its output before the exit is sent
		KillRest: guest.KillGroup,
		Signals:  sigs,
	}
}
