package taskservice

import (
	"context"
	"io"
	"sync"
	"syscall"

	"github.com/containerd/fifo"

	"github.com/firegopher/firegopher/internal/agent"
)

// processIO is one process's side of containerd's FIFOs: the writers its output goes to, a
// stdin that ends at CloseIO (or when the client's writer closes), and terminal resizes.
type processIO struct {
	stdout, stderr io.WriteCloser // nil: no FIFO named
	stdin          *io.PipeReader // nil: no stdin
	stdinW         *io.PipeWriter
	stdinFIFO      io.ReadWriteCloser
	resize         chan agent.Resize
	closeOnce      sync.Once
}

// openIO opens the FIFOs containerd named. The client may open its ends only after the
// request returns (ctr exec does), so the opens must outlive the request's context.
func openIO(stdin, stdout, stderr string, terminal bool) (*processIO, error) {
	ctx := context.Background()
	p := &processIO{resize: make(chan agent.Resize, 1)}
	var err error
	if stdout != "" {
		if p.stdout, err = fifo.OpenFifo(ctx, stdout, syscall.O_WRONLY, 0); err != nil {
			return nil, err
		}
	}
	if stderr != "" && !terminal {
		if p.stderr, err = fifo.OpenFifo(ctx, stderr, syscall.O_WRONLY, 0); err != nil {
			p.close()
			return nil, err
		}
	}
	if stdin != "" {
		if p.stdinFIFO, err = fifo.OpenFifo(ctx, stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
			p.close()
			return nil, err
		}
		p.stdin, p.stdinW = io.Pipe()
		go func() {
			// The pipe, not the FIFO, is what the guest's stdin reads: CloseIO ends it
			// even while the client keeps its writer open.
			io.Copy(p.stdinW, p.stdinFIFO)
			p.stdinW.Close()
		}()
	}
	return p, nil
}

// writers are the process's stdout and stderr as the supervisor's Stdio takes them.
func (p *processIO) writers() (stdout, stderr io.Writer) {
	if p.stdout != nil {
		stdout = p.stdout
	}
	if p.stderr != nil {
		stderr = p.stderr
	}
	return stdout, stderr
}

// reader is the process's stdin, nil when it has none.
func (p *processIO) reader() io.Reader {
	if p.stdin == nil {
		return nil
	}
	return p.stdin
}

// closeStdin ends the process's stdin (CloseIO).
func (p *processIO) closeStdin() {
	if p.stdinW != nil {
		p.stdinW.Close()
	}
}

// setSize passes a terminal size on, replacing one not yet taken.
func (p *processIO) setSize(r agent.Resize) {
	for {
		select {
		case p.resize <- r:
			return
		default:
			select {
			case <-p.resize:
			default:
			}
		}
	}
}

// close closes every FIFO: the client's readers see EOF once the process has ended.
func (p *processIO) close() {
	p.closeOnce.Do(func() {
		for _, c := range []io.Closer{p.stdout, p.stderr, p.stdinFIFO} {
			if c != nil {
				c.Close()
			}
		}
		p.closeStdin()
	})
}
