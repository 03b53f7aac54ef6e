package supervisor

import (
	"context"
	"errors"
	"fmt"
	goio "io"
	"net"
	"path/filepath"

	"github.com/firegopher/firegopher/internal/agent"
)

// ErrNotRunning means no supervisor answers for the VM: it has ended.
var ErrNotRunning = errors.New("the VM is not running")

// Client talks to a running VM's supervisor over its API socket.
type Client struct {
	c    net.Conn
	conn *agent.Conn
}

// Dial connects to the supervisor of the VM whose directory is dir.
func Dial(dir string) (*Client, error) {
	c, err := net.Dial("unix", filepath.Join(dir, APISocket))
	if err != nil {
		if Owned(dir) {
			// Alive but not (yet) listening: starting up, or wedged. Not "not running".
			return nil, fmt.Errorf("the VM's supervisor does not answer (starting?): %v", err)
		}
		return nil, fmt.Errorf("%w (%v)", ErrNotRunning, err)
	}
	return &Client{c: c, conn: agent.NewConn(c)}, nil
}

func (c *Client) Close() error { return c.c.Close() }

// Attach subscribes to the main workload's output and exit; it returns how many bytes of
// the output log were written before the subscription began.
func (c *Client) Attach() (int64, error) {
	if err := c.conn.Send(agent.KindAttach, agent.MainStream, nil); err != nil {
		return 0, err
	}
	f, err := c.conn.Receive()
	if err != nil {
		return 0, err
	}
	var a agent.Attached
	if f.Kind != agent.KindAttached {
		return 0, fmt.Errorf("supervisor answered attach with %s", f.Kind)
	}
	// Decoded first: the order of evaluating a.LogOffset against the call is unspecified.
	err = f.Decode(&a)
	return a.LogOffset, err
}

// Signal asks init to deliver sig to the main workload, or on a connection that started an
// exec, to that exec.
func (c *Client) Signal(sig int) error {
	return c.conn.Send(agent.KindSignal, agent.MainStream, []byte{byte(sig)})
}

// Stop asks for a graceful stop and waits until the supervisor has taken it on.
func (c *Client) Stop(timeoutSeconds int) error {
	if err := c.conn.SendJSON(agent.KindStop, agent.MainStream, agent.Stop{TimeoutSeconds: timeoutSeconds}); err != nil {
		return err
	}
	_, err := c.conn.Receive()
	return err
}

// Resize sets the terminal size of the attached workload (or of this client's exec).
func (c *Client) Resize(r agent.Resize) error {
	return c.conn.SendJSON(agent.KindResize, agent.MainStream, r)
}

// Exec starts a command in the VM; its output and exit follow on the connection.
func (c *Client) Exec(e agent.Exec) error {
	return c.conn.SendJSON(agent.KindExec, agent.MainStream, e)
}

// Copy writes output frames to stdout/stderr until an exit frame arrives, and returns it.
// An attached client sees the main workload's exit; an exec client its command's.
func (c *Client) Copy(stdout, stderr goio.Writer) (agent.Exit, error) {
	return c.Stream(context.Background(), Stdio{Stdout: stdout, Stderr: stderr})
}

// Stream is Copy with the terminal side too: io.Stdin (if set) goes to the process's stdin
// — the attached workload's, or this client's exec's — paced by the guest's windows, and
// io.Resize's sizes to its terminal. When io.Stdin fails (say, console.ErrDetached) Stream
// returns that error at once and the process runs on; at its EOF the process's stdin closes.
func (c *Client) Stream(ctx context.Context, io Stdio) (agent.Exit, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	window := agent.NewWindow()
	stdinErr := make(chan error, 1)
	if io.Stdin != nil {
		go func() {
			err := agent.PumpStdin(ctx, io.Stdin, func(p []byte) error {
				return c.conn.Send(agent.KindStdin, agent.MainStream, p)
			}, window)
			if err != nil && ctx.Err() == nil {
				stdinErr <- err
				c.c.Close() // ends the receive loop below
			}
		}()
	}
	if io.Resize != nil {
		go func() {
			for {
				select {
				case r := <-io.Resize:
					c.conn.SendJSON(agent.KindResize, agent.MainStream, r)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for {
		f, err := c.conn.Receive()
		if err != nil {
			select {
			case serr := <-stdinErr:
				return agent.Exit{}, serr
			default:
			}
			if errors.Is(err, goio.EOF) {
				return agent.Exit{}, fmt.Errorf("supervisor closed the connection: %w", ErrNotRunning)
			}
			return agent.Exit{}, err
		}
		switch f.Kind {
		case agent.KindStdout:
			if io.Stdout != nil {
				io.Stdout.Write(f.Payload)
			}
		case agent.KindStderr:
			if io.Stderr != nil {
				io.Stderr.Write(f.Payload)
			}
		case agent.KindWindow:
			if n, err := agent.WindowGrant(f.Payload); err == nil {
				window.Grant(n)
			}
		case agent.KindExit:
			var e agent.Exit
			return e, f.Decode(&e)
		}
	}
}
