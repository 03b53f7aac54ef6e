// Package backends is which VMM backends this machine has and how each is built: QEMU, and
// Firecracker under its jailer from a release installed in the state directory; which one
// a machine that names none gets; and the jails gc reclaims. It is named for what it owns,
// the backends, rather than for the Host it hands out: both binaries that supervise VMs
// (the CLI and the containerd shim) build their supervisor.Host here, so that they run the
// same VMMs the same way and only read their own flags and environment.
package backends

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/qemu"
)

// VMMEnv names the backend of a machine that names none (qemu or firecracker); unset
// means the default (Name). The binaries read it; this package only names it.
const VMMEnv = "FIREGOPHER_VMM"

// constructors are the backends this machine can drive, by name.
var constructors = map[string]func(*supervisor.Host, spec.VMM) (vmm.Backend, error){
	vmm.QEMU:        func(_ *supervisor.Host, v spec.VMM) (vmm.Backend, error) { return qemu.New(v.Accel) },
	vmm.Firecracker: func(h *supervisor.Host, _ spec.VMM) (vmm.Backend, error) { return firecrackerBackend(h) },
}

// NewHost is the state directory stateDir as the supervisor library sees it, with this
// machine's backends and, once any VM was jailed there, its jails.
func NewHost(stateDir string, log *slog.Logger) (*supervisor.Host, error) {
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	h := &supervisor.Host{StateDir: dir, Log: log}
	h.Backend = func(v spec.VMM) (vmm.Backend, error) { return New(h, v) }
	if h.Jails, err = firecrackerJails(h); err != nil {
		return nil, err
	}
	return h, nil
}

// New is the backend v names on h; none names the default (Name).
func New(h *supervisor.Host, v spec.VMM) (vmm.Backend, error) {
	c, ok := constructors[Name(h, v)]
	if !ok {
		return nil, fmt.Errorf("vmm backend: %q, want %s or %s", v.Backend, vmm.QEMU, vmm.Firecracker)
	}
	return c(h, v)
}

// kvmError says why KVM cannot run guests here, nil when it can; a variable for tests
// (no test may use KVM).
var kvmError = probeKVM

// probeKVM is qemu's probe: a vmx/svm CPU flag and an answering /dev/kvm.
func probeKVM() error {
	if qemu.ProbeAccel("/proc/cpuinfo", "/dev/kvm") != qemu.AccelKVM {
		return errors.New("no vmx/svm CPU flag, or /dev/kvm does not answer")
	}
	return nil
}

// noticed holds the hosts whose default was logged: a command that asks for the backend
// twice (create, then start) says it once.
var noticed sync.Map // *supervisor.Host → struct{}

// Name is the backend v names, or h's default: firecracker where KVM works and a release
// is installed in h's state directory, else qemu (vmm.DefaultBackend). The default is
// logged once per host: at info when it is a surprise (a release is installed and still
// QEMU runs), else at debug.
func Name(h *supervisor.Host, v spec.VMM) string {
	if v.Backend != "" {
		return v.Backend
	}
	release := newestFirecracker(h)
	name, why := vmm.DefaultBackend(kvmError(), release)
	if _, seen := noticed.LoadOrStore(h, struct{}{}); !seen {
		level := slog.LevelDebug
		if release != "" && name != vmm.Firecracker {
			level = slog.LevelInfo
		}
		h.Log.Log(context.Background(), level, "vmm: "+name, "why", why)
	}
	return name
}

// Known says whether name is a backend this machine can drive ("" is the default).
func Known(name string) bool {
	_, ok := constructors[name]
	return ok || name == ""
}
