//go:build linux

package guest

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// ForwardedSignals reach init (from the console) and are passed on to the workload as they
// are. SIGINT is not among them: to init it means "stop" (see StopSignal).
var ForwardedSignals = []os.Signal{unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// InitSignals are the signals that reach PID 1 from the console, the kernel (Ctrl-Alt-Del)
// or the host. They are caught from init's first moment: Go's default action for most of
// them is to exit, and PID 1 exiting panics the kernel.
type InitSignals struct {
	ch chan os.Signal
}

// StopSignal asks init to stop the workload and end the VM (Ctrl-Alt-Del arrives as it).
const StopSignal = unix.SIGINT

// CatchInitSignals starts catching StopSignal and ForwardedSignals.
func CatchInitSignals() *InitSignals {
	s := &InitSignals{ch: make(chan os.Signal, 16)}
	signal.Notify(s.ch, append([]os.Signal{StopSignal}, ForwardedSignals...)...)
	return s
}

// StopRequested takes what has arrived so far and says whether a stop was among it; the
// rest is dropped. It is for stage 1, which has no workload to pass signals to.
func (s *InitSignals) StopRequested() bool {
	stop := false
	for {
		select {
		case sig := <-s.ch:
			stop = stop || sig == StopSignal
		default:
			return stop
		}
	}
}

// Deliver hands every signal to come to its handler, in the background: a stop to stop,
// the others to forward.
func (s *InitSignals) Deliver(stop func(), forward func(unix.Signal)) {
	go func() {
		for sig := range s.ch {
			if sig == StopSignal {
				stop()
			} else {
				forward(sig.(unix.Signal))
			}
		}
	}()
}
