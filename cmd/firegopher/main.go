// firegopher runs workloads in microVMs. This package only wires: it parses flags into
// validated specs and hands them to the internal packages.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/exitcode"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/qemu"
)

// exitCode carries the workload's exit status out of a command.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

type globalFlags struct {
	stateDir string
	debug    bool
}

func (g *globalFlags) logger() *slog.Logger {
	level := slog.LevelInfo
	if g.debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func (g *globalFlags) cacheDir() string { return filepath.Join(g.stateDir, "cache") }

// host is the state directory as the supervisor library sees it.
func (g *globalFlags) host() (*supervisor.Host, error) {
	dir, err := filepath.Abs(g.stateDir)
	if err != nil {
		return nil, fmt.Errorf("--state-dir: %w", err)
	}
	h := &supervisor.Host{StateDir: dir, Log: g.logger()}
	h.Backend = func(v spec.VMM) (vmm.Backend, error) { return newBackend(h, v) }
	if h.Jails, err = firecrackerJails(h); err != nil {
		return nil, err
	}
	return h, nil
}

// backends are the VMM backends this binary can drive, by --vmm name.
var backends = map[string]func(*supervisor.Host, spec.VMM) (vmm.Backend, error){
	vmm.QEMU:        func(_ *supervisor.Host, v spec.VMM) (vmm.Backend, error) { return qemu.New(v.Accel) },
	vmm.Firecracker: func(h *supervisor.Host, _ spec.VMM) (vmm.Backend, error) { return firecrackerBackend(h) },
}

// defaultLogged: a command that asks for the backend twice (create, then start) says once.
var defaultLogged sync.Once

// newBackend is the backend v names; none names the default (backendName).
func newBackend(h *supervisor.Host, v spec.VMM) (vmm.Backend, error) {
	b, ok := backends[backendName(h, v)]
	if !ok {
		return nil, fmt.Errorf("--vmm: %q, want %s or %s", v.Backend, vmm.QEMU, vmm.Firecracker)
	}
	return b(h, v)
}

// backendName is the backend v names, or the default: firecracker where KVM works and a
// release is installed, else qemu (vmm.DefaultBackend).
func backendName(h *supervisor.Host, v spec.VMM) string {
	if v.Backend != "" {
		return v.Backend
	}
	release := newestFirecracker(h)
	name, why := vmm.DefaultBackend(kvmError(), release)
	defaultLogged.Do(func() {
		// Said out loud when it is a surprise: a Firecracker release is installed and still
		// QEMU runs. Otherwise it is the expected default, and --debug shows it.
		if release != "" && name != vmm.Firecracker {
			h.Log.Info("vmm: "+name, "why", why)
		} else {
			h.Log.Debug("vmm: "+name, "why", why)
		}
	})
	return name
}

func defaultStateDir() string {
	if d := os.Getenv("FIREGOPHER_STATE_DIR"); d != "" {
		return d
	}
	return "/var/lib/firegopher"
}

func newRootCommand() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "firegopher",
		Short:         "Run workloads in microVMs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.stateDir, "state-dir", defaultStateDir(), "state and cache directory (env FIREGOPHER_STATE_DIR)")
	root.PersistentFlags().BoolVar(&g.debug, "debug", false, "log every step")
	root.AddCommand(newRunCommand(g), newStartCommand(g), newPrepareCommand(g), newSuperviseCommand(g),
		newPsCommand(g), newLogsCommand(g), newStopCommand(g), newKillCommand(g),
		newRmCommand(g), newInspectCommand(g), newWaitCommand(g), newExecCommand(g), newAttachCommand(g), newCpCommand(g), newGCCommand(g),
		newHostCommand(g), newNetCommand(g),
		newPullCommand(g), newPushCommand(g), newImagesCommand(g), newRmiCommand(g), newAssetsCommand(g),
		newFirecrackerCommand(g), newImageCommand(g),
		newUpCommand(g), newDownCommand(g), newInventoryCommand(g), newSSHCommand(g),
		newVolumeCommand(g), newProxyCommand(g))
	return root
}

func main() {
	err := newRootCommand().Execute()
	var code exitCode
	switch {
	case err == nil:
	case errors.As(err, &code):
		os.Exit(int(code))
	case errors.Is(err, errInterrupted):
		fmt.Fprintln(os.Stderr, "firegopher: interrupted; the VM was stopped")
		os.Exit(exitcode.Interrupted)
	default:
		fmt.Fprintf(os.Stderr, "firegopher: %v\n", err)
		os.Exit(exitcode.FiregopherError)
	}
}
