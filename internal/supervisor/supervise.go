package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm/qemu"
)

// Launch is everything needed to start a VM whose assets are already in the cache. `run
// -d` stores it in the VM's record, and the detached supervisor starts from it.
type Launch struct {
	CacheDir   string          `json:"cache_dir"`
	KernelRef  assets.Digest   `json:"kernel"`
	Rootfs     string          `json:"rootfs"`
	InitBinary string          `json:"init_binary"`
	Accel      string          `json:"accel,omitempty"`
	CPUs       int             `json:"cpus"`
	MemoryMiB  int             `json:"memory_mib"`
	Config     vmconfig.Config `json:"config"`
	Network    *NetLaunch      `json:"network,omitempty"`
}

// NewVM builds the VM that launch describes, in dir.
func NewVM(id, dir string, launch Launch, log *slog.Logger) (*VM, error) {
	store, err := assets.Open(launch.CacheDir)
	if err != nil {
		return nil, err
	}
	k, err := store.LoadKernel(launch.KernelRef)
	if err != nil {
		return nil, err
	}
	backend, err := qemu.New(launch.Accel)
	if err != nil {
		return nil, err
	}
	return &VM{
		ID: id, Dir: dir, Store: store, KernelRef: launch.KernelRef, Kernel: k,
		Rootfs: launch.Rootfs, InitBinary: launch.InitBinary, Backend: backend,
		CPUs: launch.CPUs, MemoryMiB: launch.MemoryMiB, Config: launch.Config,
		Net: launch.Network, Log: log.With("vm", id),
	}, nil
}

// Options of one supervision.
type Options struct {
	Steps Steps
	// Stdout and Stderr receive the workload's output in a foreground run; nil when detached.
	Stdout, Stderr io.Writer
	// AutoRemove deletes the VM's record and directory when it ends (foreground runs).
	AutoRemove bool
	// Started is called once the VM is up (the detached supervisor tells `run -d`).
	Started func()
	// Lock is the VM directory's lock from ClaimDir; Supervise closes it at the very end.
	Lock *os.File
}

// Supervise starts the VM, relays until it ends, records the outcome in st, and tears
// everything down. The record must exist (status created).
func Supervise(ctx context.Context, st *state.Store, vm *VM, opts Options) (agent.Exit, error) {
	if opts.Steps == nil {
		opts.Steps = DefaultSteps()
		if vm.Net != nil {
			var err error
			if opts.Steps, err = WithNetwork(opts.Steps); err != nil {
				return agent.Exit{}, err
			}
			// Recorded before anything exists: if we die at any later point, gc finds the
			// allocation (and through it the TAP) from the run id and machine name.
			opts.Steps, err = opts.Steps.InsertBefore("allocate-address", Step{Name: "record-network",
				Do: func(context.Context, *VM) error {
					_, err := st.Update(vm.ID, func(r *state.VM) error { r.Network = vm.netRecord(); return nil })
					return err
				}})
			if err != nil {
				return agent.Exit{}, err
			}
		}
	}
	vm.lock = opts.Lock
	if err := lockDir(vm); err != nil {
		record(st, vm.ID, agent.Exit{}, err)
		return agent.Exit{}, err
	}
	defer func() {
		if opts.AutoRemove {
			os.RemoveAll(vm.Dir)
			st.Delete(vm.ID)
		}
		unlockDir(vm)
	}()
	teardown, err := opts.Steps.Run(ctx, vm)
	if err != nil {
		record(st, vm.ID, agent.Exit{}, err)
		return agent.Exit{}, err
	}
	_, uerr := st.Update(vm.ID, func(r *state.VM) error {
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
	exit, err := vm.Relay(ctx, opts.Stdout, opts.Stderr)
	if terr := teardown(); terr != nil {
		vm.Log.Warn("teardown", "error", terr)
	}
	record(st, vm.ID, exit, err)
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

// DecodeLaunch reads a record's launch description.
func DecodeLaunch(r *state.VM) (Launch, error) {
	var l Launch
	if len(r.Launch) == 0 {
		return l, errors.New("record has no launch description")
	}
	return l, json.Unmarshal(r.Launch, &l)
}
