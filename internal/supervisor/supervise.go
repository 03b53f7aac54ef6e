package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/vmm"
)

// Host is one state directory and what VMs there need: the CLI, `up` and the containerd
// shim each make one and drive VMs through it.
type Host struct {
	StateDir string
	Log      *slog.Logger
	// Backend returns the VMM backend a machine asks for.
	Backend func(spec.VMM) (vmm.Backend, error)
	// Procs is the process table gc looks at; nil means this host's /proc.
	Procs ProcessTable
	// Jails are the jails of this state directory's jailed VMs (JailBase), for gc; nil
	// when no backend here jails its VMs.
	Jails Jails
}

// Paths under the state directory.
func (h *Host) CacheDir() string  { return filepath.Join(h.StateDir, "cache") }
func (h *Host) VMsDir() string    { return filepath.Join(h.StateDir, "vms") }
func (h *Host) NetworkDB() string { return filepath.Join(h.StateDir, "network.db") }

// State opens the VM records.
func (h *Host) State() (*state.Store, error) {
	if err := os.MkdirAll(h.StateDir, 0o755); err != nil {
		return nil, err
	}
	return state.Open(filepath.Join(h.StateDir, "state.db"))
}

// Store opens the asset cache.
func (h *Host) Store() (*assets.Store, error) { return assets.Open(h.CacheDir()) }

// NewVM builds the VM of a record whose machine has its assets resolved.
func (h *Host) NewVM(st *state.Store, rec *state.VM) (*VM, error) {
	return h.newVM(st, rec, nil)
}

// newVM is NewVM with the machine's backend already built (nil: built here).
func (h *Host) newVM(st *state.Store, rec *state.VM, backend vmm.Backend) (*VM, error) {
	m := rec.Machine
	if m == nil {
		return nil, fmt.Errorf("VM %s: record has no machine", rec.ID)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("VM %s: %w", rec.ID, err)
	}
	if m.Assets == nil {
		return nil, fmt.Errorf("VM %s: assets not resolved", rec.ID)
	}
	store, err := h.Store()
	if err != nil {
		return nil, err
	}
	k, err := store.LoadKernel(assets.Digest(m.Assets.Kernel))
	if err != nil {
		return nil, err
	}
	if backend == nil {
		if backend, err = h.Backend(m.VMM); err != nil {
			return nil, err
		}
	}
	return &VM{
		Machine: m, Dir: rec.Dir, Store: store, Backend: backend, State: st,
		Log: h.Log.With("vm", m.ID), NetworkDB: h.NetworkDB(), VolumesDir: h.VolumesDir(), kernel: k,
	}, nil
}

// Options of one supervision.
type Options struct {
	// Steps is the start sequence; nil means DefaultSteps().
	Steps Steps
	// Stdio is a foreground run's terminal side; zero when detached.
	Stdio Stdio
	// AutoRemove deletes the VM's record and directory when it ends (foreground runs).
	AutoRemove bool
	// Started is called once the VM is up (the detached supervisor tells `run -d`).
	Started func()
	// Lock is the VM directory's lock from ClaimDir; Supervise closes it at the very end.
	Lock *os.File
}

// Supervise starts the VM, relays until it ends, records the outcome, and tears everything
// down. The record must exist (status created).
func Supervise(ctx context.Context, vm *VM, opts Options) (agent.Exit, error) {
	if opts.Steps == nil {
		opts.Steps = DefaultSteps()
	}
	st := vm.State
	vm.lock = opts.Lock
	if err := lockDir(vm); err != nil {
		record(st, vm.ID(), agent.Exit{}, err)
		return agent.Exit{}, err
	}
	defer func() {
		if opts.AutoRemove {
			if err := os.RemoveAll(vm.Dir); err != nil {
				vm.Log.Warn("remove VM directory", "error", err)
			}
			if err := st.Delete(vm.ID()); err != nil {
				vm.Log.Warn("remove VM record", "error", err)
			}
		}
		vm.lock.Close()
	}()
	teardown, err := opts.Steps.Run(ctx, vm)
	if err != nil {
		record(st, vm.ID(), agent.Exit{}, err)
		return agent.Exit{}, err
	}
	_, uerr := st.Update(vm.ID(), func(r *state.VM) error {
		r.Status, r.StartedAt = state.Running, time.Now()
		r.SupervisorPID, r.VMMPID, r.Backend = os.Getpid(), vm.VMMPid(), vm.Backend.Name()
		r.Network = vm.netRecord()
		return nil
	})
	if uerr != nil {
		vm.Log.Warn("record running state", "error", uerr)
	}
	if opts.Started != nil {
		opts.Started()
	}
	exit, err := vm.Relay(ctx, opts.Stdio)
	if terr := teardown(); terr != nil {
		vm.Log.Warn("teardown", "error", terr)
	}
	record(st, vm.ID(), exit, err)
	return exit, err
}

func record(st *state.Store, id string, exit agent.Exit, err error) {
	st.Update(id, func(r *state.VM) error {
		r.Status, r.FinishedAt, r.VMMPID = state.Exited, time.Now(), 0
		switch {
		case errors.Is(err, context.Canceled):
			r.Error = "stopped: interrupted"
		case err != nil:
			r.Error = err.Error()
		default:
			code := exit.Code
			r.ExitCode, r.Signal, r.Error = &code, exit.Signal, exit.Error
		}
		return nil
	})
}
