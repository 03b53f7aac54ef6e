package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
)

// Process is a VMM process as every backend runs it: tagged with its VM's directory, in a
// process group of its own (a terminal's Ctrl-C reaches the supervisor, which stops the VM
// in order), and killed by the kernel if the supervisor dies.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done closes
}

// StartProcess starts path with args for spec's VM; out receives its stdout and stderr
// (nil: discarded) and is closed when the process ends; env is added to ours.
func StartProcess(spec Spec, path string, args []string, out *os.File, env ...string) (*Process, error) {
	return StartProcessWith(spec, path, args, out, ProcessOptions{Env: env})
}

// ProcessOptions are what some backends need beyond StartProcess.
type ProcessOptions struct {
	Env []string
	// Console, if set, receives the process's stdout (a VMM's serial console); out then
	// gets its stderr only (nil: stderr goes to Console too).
	Console io.Writer
	// NewPIDNS starts the process as pid 1 of a new PID namespace (the Firecracker jailer
	// then execs Firecracker in place, and it stays our child). SIGKILL from here still
	// reaches it, and takes the namespace's other processes with it.
	NewPIDNS bool
	// Dir is the process's working directory ("": ours); relative paths it is given
	// resolve there.
	Dir string
}

// StartProcessWith is StartProcess with options.
func StartProcessWith(spec Spec, path string, args []string, out *os.File, opts ProcessOptions) (*Process, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = append(append(os.Environ(), ProcessTagEnv+"="+spec.Dir), opts.Env...)
	cmd.Dir = opts.Dir
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	if opts.Console != nil {
		cmd.Stdout = opts.Console
		if out == nil {
			cmd.Stderr = opts.Console
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if opts.NewPIDNS {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
	}
	if err := cmd.Start(); err != nil {
		if out != nil {
			out.Close()
		}
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if out != nil {
			out.Close()
		}
		close(p.done)
	}()
	return p, nil
}

func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited says whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error once Done is closed (nil for exit status 0).
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Kill sends SIGKILL unless the process has already ended.
func (p *Process) Kill() error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Signal sends sig unless the process has already ended.
func (p *Process) Signal(sig os.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// WaitOrKill waits for the process to exit; when ctx ends first it kills it. It returns
// ctx's error in that case, so a caller can tell a clean stop from a forced one.
func (p *Process) WaitOrKill(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.Kill()
		<-p.done
		return ctx.Err()
	}
}

// AcceptControl waits on ln for the guest's control connection (the VMM or the guest
// connects to the host), or for the process to exit, or for ctx to end.
func AcceptControl(ctx context.Context, ln net.Listener, p *Process) (net.Conn, error) {
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() { c, err := ln.Accept(); ch <- accepted{c, err} }()
	select {
	case a := <-ch:
		return a.c, a.err
	case <-p.done:
		// The VMM may have connected just before dying: prefer the connection.
		select {
		case a := <-ch:
			if a.err == nil {
				return a.c, nil
			}
		default:
		}
		ln.Close()
		return nil, errors.New("the VMM exited before the guest connected")
	case <-ctx.Done():
		ln.Close()
		if a := <-ch; a.err == nil {
			a.c.Close()
		}
		return nil, fmt.Errorf("the guest did not connect: %w", ctx.Err())
	}
}

// Running is what every backend's Instance shares: the VMM process, the listener the guest's
// control connection arrives on (nil for a guest without one), and the end of both. A
// backend embeds it and adds Wait's wording and Shutdown.
type Running struct {
	Proc    *Process
	control net.Listener
	ended   chan struct{} // closed once the process has exited and cleanup has run
}

// Run starts watching proc: when it exits, the control listener is closed (which removes
// its socket file) and cleanup (may be nil) removes the backend's other files.
func Run(proc *Process, control net.Listener, cleanup func()) *Running {
	r := &Running{Proc: proc, control: control, ended: make(chan struct{})}
	go func() {
		<-proc.Done()
		if control != nil {
			control.Close()
		}
		if cleanup != nil {
			cleanup()
		}
		close(r.ended)
	}()
	return r
}

func (r *Running) Pid() int { return r.Proc.Pid() }

func (r *Running) Kill() error { return r.Proc.Kill() }

// Control waits for the guest's control connection.
func (r *Running) Control(ctx context.Context) (net.Conn, error) {
	if r.control == nil {
		return nil, ErrNoControl
	}
	return AcceptControl(ctx, r.control, r.Proc)
}

// Ended waits until the process has exited and its files are gone, and returns its exit
// error (nil for status 0).
func (r *Running) Ended() error {
	<-r.ended
	return r.Proc.Err()
}
