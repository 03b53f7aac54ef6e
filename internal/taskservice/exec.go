package taskservice

import (
	"context"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/supervisor"
)

// Exec adds a process to a running container; it starts at Start.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if c.sandbox {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "exec in a pod's sandbox container: it has no VM")
	}
	p, err := decodeProcess(r.Spec.GetValue())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if c.status != task.Status_RUNNING {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s is %s", r.ID, c.status)
	}
	if c.execs[r.ExecID] != nil {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s", r.ExecID)
	}
	e := &execProcess{spec: p, process: process{id: r.ExecID, stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr,
		terminal: r.Terminal, status: task.Status_CREATED, pid: c.pid, done: make(chan struct{})}}
	c.execs[r.ExecID] = e
	s.mu.Unlock()
	if e.io, err = openIO(r.Stdin, r.Stdout, r.Stderr, r.Terminal); err != nil {
		s.mu.Lock()
		delete(c.execs, r.ExecID)
		s.mu.Unlock()
		return nil, fmt.Errorf("exec stdio: %w", err)
	}
	s.publish(runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

// startExec runs an added exec in the container's VM through its supervisor's API.
func (s *Service) startExec(c *container, execID string) (*taskAPI.StartResponse, error) {
	s.mu.Lock()
	_, e, err := c.proc(execID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if e.status != task.Status_CREATED {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "exec %s is %s", execID, e.status)
	}
	s.mu.Unlock()
	p := e.spec
	req := agent.Exec{
		Argv: p.Args, Env: p.Env, WorkDir: p.Cwd, Stdin: e.stdin != "",
		User: fmt.Sprintf("%d:%d", p.User.UID, p.User.GID),
	}
	if e.terminal {
		req.TTY = &agent.Resize{Rows: 24, Cols: 80}
		if p.ConsoleSize != nil && p.ConsoleSize.Height > 0 {
			req.TTY = &agent.Resize{Rows: uint16(p.ConsoleSize.Height), Cols: uint16(p.ConsoleSize.Width)}
		}
	}
	client, err := supervisor.Dial(c.vmDir)
	if err != nil {
		return nil, fmt.Errorf("exec %s: %w", execID, err)
	}
	if err := client.Exec(req); err != nil {
		client.Close()
		return nil, fmt.Errorf("exec %s: %w", execID, err)
	}
	s.mu.Lock()
	e.status, e.client = task.Status_RUNNING, client
	s.mu.Unlock()
	stdout, stderr := e.io.writers()
	go func() {
		defer client.Close()
		exit, err := client.Stream(context.Background(), supervisor.Stdio{Stdout: stdout, Stderr: stderr, Stdin: e.io.reader(), Resize: e.io.resize})
		s.mu.Lock()
		code := exitCode(exit, err, false)
		e.exited(code)
		s.mu.Unlock()
		if err != nil {
			s.cfg.Log.Warn("exec ended without an exit status", "container", c.id, "exec", execID, "error", err)
		}
		e.io.close()
		s.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
			ContainerID: c.id, ID: execID, Pid: e.pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(e.exitedAt),
		})
		close(e.done)
	}()
	s.publish(runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: execID, Pid: e.pid})
	return &taskAPI.StartResponse{Pid: e.pid}, nil
}
