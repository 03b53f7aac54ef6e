package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"

	"github.com/firegopher/firegopher/internal/vmm"
)

// process is vmm.Process with one addition the jail needs: starting in a new PID namespace
// (the jailer then execs Firecracker in place as that namespace's pid 1, and it stays our
// child). It can go once vmm.StartProcess takes a SysProcAttr.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done closes
}

// startProcess starts path with args for spec's VM: tagged with its directory (the jailer
// clears the environment: a jailed Firecracker is found by its uid instead), in a process
// group of its own, killed if we die (until the jailer's setuid clears that), out as its
// stdout and stderr (closed when it ends).
func startProcess(spec vmm.Spec, path string, args []string, out *os.File, newPIDNS bool) (*process, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), vmm.ProcessTagEnv+"="+spec.Dir)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if newPIDNS {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) Pid() int { return p.cmd.Process.Pid }

func (p *process) Done() <-chan struct{} { return p.done }

func (p *process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) Err() error {
	<-p.done
	return p.err
}

// Kill sends SIGKILL unless the process has ended. SIGKILL reaches a PID namespace's pid 1
// from its parent namespace, and takes the namespace's other processes with it.
func (p *process) Kill() error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// WaitOrKill waits for the process to exit; when ctx ends first it kills it and returns
// ctx's error.
func (p *process) WaitOrKill(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.Kill()
		<-p.done
		return ctx.Err()
	}
}

// acceptControl is vmm.AcceptControl for a process of ours.
func acceptControl(ctx context.Context, ln net.Listener, p *process) (net.Conn, error) {
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
