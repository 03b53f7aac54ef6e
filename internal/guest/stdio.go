//go:build linux

package guest

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// PTY is a pseudo-terminal pair: the workload gets Slave as its stdio and controlling tty,
// the session reads its output from and writes its input to Master.
type PTY struct {
	Master, Slave *os.File
}

// OpenPTY opens a new pseudo-terminal (devpts must be mounted, /dev/ptmx present).
func OpenPTY() (*PTY, error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("pty: %w", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, fmt.Errorf("pty: unlock: %w", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("pty: number: %w", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("pty: %w", err)
	}
	return &PTY{Master: m, Slave: s}, nil
}

// Resize sets the terminal's size; the foreground process group gets SIGWINCH.
func (p *PTY) Resize(rows, cols uint16) error {
	return unix.IoctlSetWinsize(int(p.Master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
}

// stdinPump feeds a workload's stdin from the host's KindStdin frames. push never blocks
// (the read loop serves every stream and the Ack); a goroutine writes the queue to the
// process and grants the host more window for what it has written, so the queue never
// holds more than the host's window (agent.StdinWindow).
type stdinPump struct {
	w     *os.File  // the pipe's write end, or the pty master
	tty   bool      // EOF on a terminal is ^D, not a close: the terminal stays
	grant func(int) // sends KindWindow

	mu    sync.Mutex
	queue [][]byte
	eof   bool
	wake  chan struct{}
	done  chan struct{}
}

// newStdinPump makes a pump that queues until attach gives it the process's end: the
// host may send stdin before the process exists.
func newStdinPump(tty bool, grant func(int)) *stdinPump {
	return &stdinPump{tty: tty, grant: grant, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// attach starts writing the queue, and what follows, to w.
func (p *stdinPump) attach(w *os.File) {
	p.w = w
	go p.run()
}

func (p *stdinPump) push(b []byte) {
	p.mu.Lock()
	if len(b) == 0 {
		p.eof = true
	} else {
		p.queue = append(p.queue, b)
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// stop ends the pump when the stream ends; what the process never read is dropped.
func (p *stdinPump) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.push(nil)
}

func (p *stdinPump) run() {
	broken := false // the process closed its stdin: keep granting, stop writing
	for {
		select {
		case <-p.wake:
		case <-p.done:
			if !p.tty {
				p.w.Close()
			}
			return
		}
		for {
			p.mu.Lock()
			if len(p.queue) == 0 {
				eof := p.eof
				p.mu.Unlock()
				if eof {
					if p.tty {
						p.w.Write([]byte{4}) // ^D: the terminal's end of input
					} else {
						p.w.Close()
						return
					}
					p.mu.Lock()
					p.eof = false
					p.mu.Unlock()
				}
				break
			}
			b := p.queue[0]
			p.queue = p.queue[1:]
			p.mu.Unlock()
			if !broken {
				if _, err := p.w.Write(b); err != nil {
					broken = true
				}
			}
			p.grant(len(b))
		}
	}
}
