//go:build linux

package guest

import (
	"errors"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// Reaper is PID 1's one wait4(-1) loop. Orphans of every process in the VM reparent to
// init, so exactly one place may reap; it hands each status to whoever started that pid
// and discards the rest (double-forked daemons), which is what keeps zombies from piling up.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan unix.WaitStatus
	empty   []chan struct{} // closed when no children remain
	kick    chan struct{}
	sigchld chan os.Signal
	done    chan struct{}
}

// NewReaper starts reaping on SIGCHLD.
func NewReaper() *Reaper {
	r := &Reaper{waiters: map[int]chan unix.WaitStatus{}, kick: make(chan struct{}, 1),
		sigchld: make(chan os.Signal, 1), done: make(chan struct{})}
	signal.Notify(r.sigchld, unix.SIGCHLD)
	go func() {
		for {
			select {
			case <-r.sigchld:
			case <-r.kick:
			case <-r.done:
				return
			}
			r.reap()
		}
	}()
	return r
}

// Close stops reaping (for tests: PID 1 reaps until the end).
func (r *Reaper) Close() {
	signal.Stop(r.sigchld)
	close(r.done)
}

// Start starts a process whose exit status arrives on the returned channel. Registration
// happens under the lock the reap loop takes, so an instant exit is never missed.
func (r *Reaper) Start(path string, argv []string, attr *os.ProcAttr) (int, <-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	pid := p.Pid
	ch := make(chan unix.WaitStatus, 1)
	r.waiters[pid] = ch
	// The runtime's handle is not used for waiting: the reap loop owns wait4.
	_ = p.Release()
	return pid, ch, nil
}

// NoChildren returns a channel closed once the VM has no processes left but init.
func (r *Reaper) NoChildren() <-chan struct{} {
	ch := make(chan struct{})
	r.mu.Lock()
	r.empty = append(r.empty, ch)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return ch
}

func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var st unix.WaitStatus
		pid, err := unix.Wait4(-1, &st, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ECHILD) {
			for _, ch := range r.empty {
				close(ch)
			}
			r.empty = nil
			return
		}
		if err != nil || pid <= 0 {
			return
		}
		if ch, ok := r.waiters[pid]; ok {
			ch <- st
			delete(r.waiters, pid)
		}
	}
}
