// firegopher runs workloads in microVMs. This package only wires: it parses flags into
// validated specs and hands them to the internal packages.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/backends"
	"github.com/firegopher/firegopher/internal/exitcode"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/supervisor"
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

// host is the state directory as the supervisor library sees it, with this machine's
// backends (internal/backends).
func (g *globalFlags) host() (*supervisor.Host, error) {
	return backends.NewHost(g.stateDir, g.logger())
}

// backendName is the backend v names, or the host's default (backends.Name).
func backendName(h *supervisor.Host, v spec.VMM) string { return backends.Name(h, v) }

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
