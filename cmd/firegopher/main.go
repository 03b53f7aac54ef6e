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
)

// Exit codes of firegopher's own failures, following docker run: the workload's own code
// passes through untouched.
const (
	exitFiregopherError = 125
	exitInterrupted     = 130
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
func (g *globalFlags) vmsDir() string   { return filepath.Join(g.stateDir, "vms") }

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
	root.AddCommand(newRunCommand(g), newPrepareCommand(g), newSuperviseCommand(g),
		newPsCommand(g), newLogsCommand(g), newStopCommand(g), newKillCommand(g),
		newRmCommand(g), newInspectCommand(g), newWaitCommand(g), newExecCommand(g), newGCCommand(g),
		newHostCommand(g), newNetCommand(g),
		newPullCommand(g), newPushCommand(g), newImagesCommand(g), newRmiCommand(g), newAssetsCommand(g),
		newFirecrackerCommand(g), newImageCommand(g))
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
		os.Exit(exitInterrupted)
	default:
		fmt.Fprintf(os.Stderr, "firegopher: %v\n", err)
		os.Exit(exitFiregopherError)
	}
}
