//go:build linux

package guest

import (
	"os/signal"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func TestInitSignalsStopOnSIGINTForwardTheRest(t *testing.T) {
	s := CatchInitSignals()
	defer signal.Stop(s.ch)
	stopped, forwarded := make(chan struct{}, 1), make(chan unix.Signal, 4)
	s.Deliver(func() { stopped <- struct{}{} }, func(sig unix.Signal) { forwarded <- sig })
	for _, sig := range []unix.Signal{unix.SIGUSR1, unix.SIGTERM} {
		unix.Kill(unix.Getpid(), sig)
		if got := <-forwarded; got != sig {
			t.Fatalf("forwarded %v, want %v", got, sig)
		}
	}
	unix.Kill(unix.Getpid(), unix.SIGINT)
	<-stopped
	if len(forwarded) != 0 {
		t.Fatalf("SIGINT was forwarded as well: %v", <-forwarded)
	}
}

func TestInitSignalsRememberAStopBeforeThereIsAWorkload(t *testing.T) {
	s := CatchInitSignals()
	defer signal.Stop(s.ch)
	if s.StopRequested() {
		t.Fatal("stop requested before any signal")
	}
	unix.Kill(unix.Getpid(), unix.SIGUSR2)
	unix.Kill(unix.Getpid(), unix.SIGINT)
	// Delivery through os/signal is asynchronous: poll the state under test.
	for !s.StopRequested() {
		runtime.Gosched()
	}
}
