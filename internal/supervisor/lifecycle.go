package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/flock"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/vmm"
)

// Created is a VM that has a record and a claimed directory, not yet started. Exactly one
// of Run, StartDetached or Discard must follow.
type Created struct {
	Record *state.VM
	lock   *os.File
	host   *Host
	st     *state.Store
	// restart: the record and directory predate this start (Host.Start), so a failed
	// start records why instead of removing them.
	restart bool
	// backend is the one Create built to check the kernel (nil if none): Run starts with
	// it rather than building another.
	backend vmm.Backend
}

// Create records a new VM for m, whose assets must be resolved. The directory is locked
// before the record exists, so gc never finds the VM unowned.
func (h *Host) Create(m *spec.Machine, detached bool) (*Created, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if m.Assets == nil {
		return nil, errors.New("create: the machine's assets are not resolved")
	}
	backend, err := h.checkKernel(m)
	if err != nil {
		return nil, err
	}
	st, err := h.State()
	if err != nil {
		return nil, err
	}
	rec := &state.VM{
		ID: m.ID, Name: m.Name, Run: m.Run, Machine: m, Status: state.Created, Detached: detached,
		CreatedAt: time.Now(), Dir: filepath.Join(h.VMsDir(), m.ID),
	}
	lock, err := ClaimDir(h.VMsDir(), m.ID)
	if err != nil {
		return nil, err
	}
	if err := st.Create(rec); err != nil {
		lock.Close()
		os.RemoveAll(rec.Dir)
		return nil, err
	}
	return &Created{Record: rec, lock: lock, host: h, st: st, backend: backend}, nil
}

// Discard removes a created VM that will not be started.
func (c *Created) Discard() {
	c.st.Delete(c.Record.ID)
	os.RemoveAll(c.Record.Dir)
	c.lock.Close()
}

// Run supervises the VM in this process until it ends, streaming its stdio, and removes
// it afterwards (like `docker run --rm`).
func (c *Created) Run(ctx context.Context, stdio Stdio) (agent.Exit, error) {
	return c.RunStarted(ctx, stdio, nil)
}

// RunStarted is Run that calls started (when not nil) with the VMM's pid once the VM is
// up: the containerd shim answers Start then.
func (c *Created) RunStarted(ctx context.Context, stdio Stdio, started func(vmmPid int)) (agent.Exit, error) {
	vm, err := c.host.newVM(c.st, c.Record, c.backend)
	if err != nil {
		c.Discard()
		return agent.Exit{}, err
	}
	opts := Options{Stdio: stdio, AutoRemove: true, Lock: c.lock}
	if started != nil {
		opts.Started = func() { started(vm.VMMPid()) }
	}
	return Supervise(ctx, vm, opts)
}

// File descriptors a detached supervisor inherits.
const (
	readyFD = 3 // it writes "ok" or why the VM did not start, one line
	lockFD  = 4 // the VM directory's lock, held until the end is recorded
)

// StartDetached runs argv (a command that ends up in ServeDetached for this VM) as the
// VM's supervisor, in a session of its own, and waits until it reports the VM started or
// why it did not.
func (c *Created) StartDetached(argv []string) error {
	defer c.lock.Close() // the supervisor holds its own reference to the lock
	fail := func(err error) error {
		if c.restart {
			record(c.st, c.Record.ID, agent.Exit{}, err)
			return err
		}
		c.st.Delete(c.Record.ID)
		os.RemoveAll(c.Record.Dir)
		return err
	}
	logPath := filepath.Join(c.Record.Dir, SupervisorLog)
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer readyR.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{readyW, c.lock} // readyFD, lockFD
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return fail(err)
	}
	readyW.Close()
	go cmd.Wait() // reap it if it dies while we wait
	// One line: "ok", or why the VM did not start. EOF without a line: it died.
	msg, _ := bufio.NewReader(readyR).ReadString('\n')
	if strings.TrimSpace(msg) != "ok" {
		if len(msg) == 0 {
			msg = "the supervisor exited without a word; see " + logPath
		}
		return fail(fmt.Errorf("start VM %s: %s", c.Record.ID, strings.TrimSpace(msg)))
	}
	return nil
}

// ServeDetached is the body of a detached supervisor started by StartDetached: it takes
// its inherited descriptors, supervises the VM until it ends and records the outcome.
func (h *Host) ServeDetached(ctx context.Context, id string) error {
	// Not inherited by the VMM: `run -d` must see the pipe close when we die, and gc must
	// see the lock go.
	unix.CloseOnExec(readyFD)
	unix.CloseOnExec(lockFD)
	ready := os.NewFile(readyFD, "ready")
	lock := os.NewFile(lockFD, "lock")
	tell := func(msg string) {
		if ready != nil {
			ready.WriteString(msg + "\n")
			ready.Close()
			ready = nil
		}
	}
	err := h.superviseDetached(ctx, id, lock, func() { tell("ok") })
	if err != nil {
		tell(err.Error())
	}
	return err
}

func (h *Host) superviseDetached(ctx context.Context, id string, lock *os.File, started func()) error {
	st, err := h.State()
	if err != nil {
		return err
	}
	rec, err := st.Get(id)
	if err != nil {
		return err
	}
	vm, err := h.NewVM(st, rec)
	if err != nil {
		record(st, id, agent.Exit{}, err)
		return err
	}
	exit, err := Supervise(ctx, vm, Options{Started: started, Lock: lock})
	h.Log.Info("VM ended", "vm", id, "code", exit.Code, "error", err)
	return err
}

// Start boots an exited detached VM again from its recorded machine, under a new detached
// supervisor (argv, as for StartDetached), and returns once it runs. As a Fly Machine's
// start, the root disk is a fresh clone of the image; volumes, name, ports and service stay.
func (h *Host) Start(rec *state.VM, argv []string) error {
	if !rec.Detached {
		return fmt.Errorf("VM %s ran in the foreground and was removed when it ended: only a detached VM (run -d) can be started again", rec.ID)
	}
	lock, err := flock.TryLock(filepath.Join(rec.Dir, LockFile))
	if err != nil {
		return fmt.Errorf("VM %s is running or being started", rec.ID)
	}
	st, err := h.State()
	if err != nil {
		lock.Close()
		return err
	}
	fresh, err := st.Update(rec.ID, func(r *state.VM) error {
		if r.Status != state.Exited {
			return fmt.Errorf("VM %s is %s, not exited", r.ID, r.Status)
		}
		r.Status, r.Error, r.ExitCode, r.Signal = state.Created, "", nil, 0
		r.FinishedAt, r.Draining, r.Network = time.Time{}, false, nil
		return nil
	})
	if err != nil {
		lock.Close()
		return err
	}
	removeRuntimeFiles(rec.Dir) // what a crashed run's gc may have missed; logs are kept
	c := &Created{Record: fresh, lock: lock, host: h, st: st, restart: true}
	return c.StartDetached(argv)
}

// Lookup resolves what a user typed (id, name or unique id prefix) to a record.
func (h *Host) Lookup(ref string) (*state.VM, error) {
	st, err := h.State()
	if err != nil {
		return nil, err
	}
	return st.Lookup(ref)
}

// Running says whether a supervisor owns the VM: liveness is its lock, not a pid.
func Running(rec *state.VM) bool { return Owned(rec.Dir) }

// Stop stops a running VM gracefully (SIGTERM to the workload, or Ctrl-Alt-Del for a
// system VM; killed after timeout) and waits until its supervisor has recorded the end.
// A VM that is not running is left as it is.
func (h *Host) Stop(rec *state.VM, timeout time.Duration) error {
	c, err := Dial(rec.Dir)
	if err != nil {
		if !Running(rec) {
			return nil
		}
		return err
	}
	defer c.Close()
	if _, err := c.Attach(); err != nil {
		return err
	}
	if err := c.Stop(int(timeout / time.Second)); err != nil {
		return err
	}
	if _, err = c.Copy(io.Discard, io.Discard); err != nil && !errors.Is(err, ErrNotRunning) {
		return err
	}
	waitReleased(rec.Dir)
	return nil
}

// Wait blocks until the VM has ended and returns its final record.
func (h *Host) Wait(rec *state.VM) (*state.VM, error) {
	if c, err := Dial(rec.Dir); err == nil {
		if _, err := c.Attach(); err == nil {
			c.Copy(io.Discard, io.Discard)
		}
		c.Close()
	}
	// The supervisor may be between closing its socket and recording the exit: its lock
	// is released only after the record is written.
	waitReleased(rec.Dir)
	st, err := h.State()
	if err != nil {
		return nil, err
	}
	return st.Get(rec.ID)
}

// Remove deletes a VM's record and files; a running VM is refused unless force, which
// stops it first.
func (h *Host) Remove(rec *state.VM, force bool) error {
	if Running(rec) {
		if !force {
			return fmt.Errorf("VM %s is running: stop it first, or rm -f", rec.ID)
		}
		if err := h.Stop(rec, 0); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(rec.Dir); err != nil {
		return err
	}
	st, err := h.State()
	if err != nil {
		return err
	}
	return st.Delete(rec.ID)
}
