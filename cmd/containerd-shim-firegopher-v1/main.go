// containerd-shim-firegopher-v1 is containerd's runtime v2 shim for firegopher (runtime
// io.containerd.firegopher.v1): every container runs in its own microVM, supervised by
// this process. This package only wires: the bootstrap is containerd v1.7's runtime/v2/shim
// (its `start` prints a plain socket address, which containerd 1.6 reads too), the tasks
// are internal/taskservice's.
//
// Environment (containerd passes its own to its shims): FIREGOPHER_STATE_DIR (default
// /var/lib/firegopher: the kernel cache, Firecracker releases and the VMs), FIREGOPHER_INIT
// (default: firegopher-init beside this binary, then /usr/local/lib/firegopher),
// FIREGOPHER_VMM (qemu or firecracker; default: firecracker where KVM works and a release
// is installed in the state directory, else qemu, as the CLI), FIREGOPHER_ACCEL (QEMU
// accelerator: kvm or tcg; default: probe), FIREGOPHER_NO_SNAPSHOT=1 (cold-boot every VM
// instead of restoring from a snapshot template), and the Firecracker backend's
// (internal/backends). The VMM is chosen by environment rather than by containerd's
// runtime options: those arrive as a protobuf Any of a type the shim would have to
// register, and a second runtime entry with its own environment needs none of that.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"

	"github.com/firegopher/firegopher/internal/backends"
	"github.com/firegopher/firegopher/internal/snapdisk"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/taskservice"
	"github.com/firegopher/firegopher/internal/vmm"
)

func main() {
	// The VMM is this process's child: no reaper may take its exit status from the
	// supervisor, and no orphan is adopted (the VMM dies with us: Pdeathsig).
	shim.Run(taskservice.RuntimeName, newService, func(c *shim.Config) {
		c.NoReaper, c.NoSubreaper = true, true
	})
}

func newService(ctx context.Context, id string, publisher shim.Publisher, shutdown func()) (shim.Shim, error) {
	ns, _ := namespaces.Namespace(ctx)
	// The bootstrap points stderr at containerd's log FIFO for the serving process;
	// containerd's debug level passes -debug.
	level := slog.LevelInfo
	if opts, ok := ctx.Value(shim.OptsKey{}).(shim.Opts); ok && opts.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("runtime", taskservice.RuntimeName, "id", id)
	stateDir := os.Getenv("FIREGOPHER_STATE_DIR")
	if stateDir == "" {
		stateDir = "/var/lib/firegopher"
	}
	h, err := backends.NewHost(stateDir, log)
	if err != nil {
		return nil, err
	}
	initBin, err := findInit()
	if err != nil {
		return nil, err
	}
	v, err := chooseVMM(h)
	if err != nil {
		return nil, err
	}
	cfg := taskservice.Config{
		Host: h, Init: initBin, Log: log, VMM: v,
		Rootfs: &snapdisk.Cache{Dir: filepath.Join(h.StateDir, "shim", "rootfs"), Log: log},
	}
	return taskservice.New(cfg, ns, publisher, shutdown), nil
}

// chooseVMM is the backend the shim's VMs run on: $FIREGOPHER_VMM, else h's default
// (backends.Name).
func chooseVMM(h *supervisor.Host) (spec.VMM, error) {
	// Snapshot templates as `firegopher run` uses them: on unless FIREGOPHER_NO_SNAPSHOT=1.
	v := spec.VMM{Backend: os.Getenv(backends.VMMEnv), Accel: os.Getenv("FIREGOPHER_ACCEL"),
		Snapshot: os.Getenv("FIREGOPHER_NO_SNAPSHOT") != "1"}
	if !backends.Known(v.Backend) {
		return v, fmt.Errorf("%s: %q, want %s or %s", backends.VMMEnv, v.Backend, vmm.QEMU, vmm.Firecracker)
	}
	v.Backend = backends.Name(h, v)
	return v, nil
}

// findInit locates firegopher-init: $FIREGOPHER_INIT, beside this binary, or the install
// location.
func findInit() (string, error) {
	candidates := []string{os.Getenv("FIREGOPHER_INIT")}
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), "firegopher-init"))
	}
	candidates = append(candidates, "/usr/local/lib/firegopher/firegopher-init")
	for _, c := range candidates {
		if fi, err := os.Stat(c); c != "" && err == nil && fi.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", errors.New("firegopher-init not found: set FIREGOPHER_INIT, or install it beside the shim or in /usr/local/lib/firegopher")
}
