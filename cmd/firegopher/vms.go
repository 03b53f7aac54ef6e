package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/assets/oci"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/supervisor"
)

func (g *globalFlags) state() (*state.Store, error) {
	if err := os.MkdirAll(g.stateDir, 0o755); err != nil {
		return nil, err
	}
	return state.Open(filepath.Join(g.stateDir, "state.db"))
}

func newRecord(g *globalFlags, id string, r *spec.Run, launch supervisor.Launch, detach bool) (*state.VM, error) {
	raw, err := json.Marshal(launch)
	if err != nil {
		return nil, err
	}
	return &state.VM{
		ID: id, Name: r.Name, Image: r.Image.String(), Kernel: r.Kernel.String(), Cmd: r.Cmd,
		CPUs: r.CPUs, MemoryMiB: r.Memory.MiB(), Status: state.Created, Detached: detach,
		CreatedAt: time.Now(), Dir: filepath.Join(g.vmsDir(), id), Launch: raw,
	}, nil
}

// startDetached re-executes firegopher as the VM's supervisor in a session of its own and
// waits until it reports the VM started (or why it did not) on a pipe.
func startDetached(ctx context.Context, g *globalFlags, rec *state.VM, lock *os.File) error {
	defer lock.Close() // the supervisor holds its own reference to the lock
	st, err := g.state()
	if err != nil {
		return err
	}
	fail := func(err error) error {
		st.Delete(rec.ID)
		os.RemoveAll(rec.Dir)
		return err
	}
	if err := os.MkdirAll(rec.Dir, 0o700); err != nil {
		return fail(err)
	}
	logFile, err := os.OpenFile(filepath.Join(rec.Dir, "supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer readyR.Close()
	exe, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	args := []string{"supervise", "--state-dir", g.stateDir, rec.ID}
	if g.debug {
		args = append(args, "--debug")
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{readyW, lock} // fds 3 and 4 in the supervisor
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
			msg = "the supervisor exited without a word; see " + logFile.Name()
		}
		return fail(fmt.Errorf("start VM %s: %s", rec.ID, strings.TrimSpace(msg)))
	}
	fmt.Println(rec.ID)
	return nil
}

func newSuperviseCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:    "supervise ID",
		Short:  "Own one detached VM until it ends (started by run -d)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Not inherited by the VMM: `run -d` must see the pipe close when we die, and
			// gc must see the lock go.
			unix.CloseOnExec(3)
			unix.CloseOnExec(4)
			ready := os.NewFile(3, "ready")
			lock := os.NewFile(4, "lock")
			tell := func(msg string) {
				if ready != nil {
					ready.WriteString(msg + "\n")
					ready.Close()
					ready = nil
				}
			}
			err := supervise(cmd.Context(), g, args[0], lock, func() { tell("ok") })
			if err != nil {
				tell(err.Error())
			}
			return err
		},
	}
}

func supervise(ctx context.Context, g *globalFlags, id string, lock *os.File, started func()) error {
	log := g.logger()
	// Detached from the terminal; SIGTERM (e.g. a host shutdown) stops the VM in order.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM)
	defer stop()
	st, err := g.state()
	if err != nil {
		return err
	}
	rec, err := st.Get(id)
	if err != nil {
		return err
	}
	launch, err := supervisor.DecodeLaunch(rec)
	if err != nil {
		return err
	}
	vm, err := supervisor.NewVM(id, rec.Dir, launch, log)
	if err != nil {
		return err
	}
	exit, err := supervisor.Supervise(ctx, st, vm, supervisor.Options{Started: started, Lock: lock})
	log.Info("VM ended", "vm", id, "code", exit.Code, "error", err)
	return err
}

func lookup(g *globalFlags, ref string) (*state.Store, *state.VM, error) {
	st, err := g.state()
	if err != nil {
		return nil, nil, err
	}
	vm, err := st.Lookup(ref)
	return st, vm, err
}

func newPsCommand(g *globalFlags) *cobra.Command {
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List VMs (running ones; -a for all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := g.state()
			if err != nil {
				return err
			}
			vms, err := st.List()
			if err != nil {
				return err
			}
			shown := []state.VM{}
			for _, vm := range vms {
				if all || vm.Status != state.Exited {
					vm.Launch = nil
					shown = append(shown, vm)
				}
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(shown)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tCREATED\tCOMMAND")
			for _, vm := range shown {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\n", vm.ID, vm.Name, describeStatus(vm),
					time.Since(vm.CreatedAt).Round(time.Second), truncateCmd(vm.Cmd))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include VMs that have exited")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func describeStatus(vm state.VM) string {
	switch {
	case vm.Status == state.Exited && vm.ExitCode != nil:
		return fmt.Sprintf("exited (%d)", *vm.ExitCode)
	case vm.Status == state.Exited:
		return "exited (error)"
	case !supervisor.Owned(vm.Dir) && vm.Status == state.Running:
		return "lost (run gc)"
	}
	return string(vm.Status)
}

func truncateCmd(cmd []string) string {
	s := strings.Join(cmd, " ")
	if len(s) > 40 {
		return s[:39] + "…"
	}
	return s
}

func newLogsCommand(g *globalFlags) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] VM",
		Short: "Print a VM's workload output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, vm, err := lookup(g, args[0])
			if err != nil {
				return err
			}
			logPath := filepath.Join(vm.Dir, supervisor.OutputLog)
			if follow {
				if c, err := supervisor.Dial(vm.Dir); err == nil {
					defer c.Close()
					offset, err := c.Attach()
					if err != nil {
						return err
					}
					if err := copyPrefix(logPath, offset, os.Stdout); err != nil {
						return err
					}
					_, err = c.Copy(os.Stdout, os.Stdout)
					if errors.Is(err, supervisor.ErrNotRunning) {
						return nil
					}
					return err
				}
			}
			return copyPrefix(logPath, -1, os.Stdout)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the VM ends")
	return cmd
}

// copyPrefix copies the first n bytes of path (all of it when n < 0) to w.
func copyPrefix(path string, n int64, w io.Writer) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if n >= 0 {
		r = io.LimitReader(f, n)
	}
	_, err = io.Copy(w, bufio.NewReader(r))
	return err
}

func newStopCommand(g *globalFlags) *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "stop [-t SECS] VM...",
		Short: "Stop VMs: SIGTERM to the workload, then kill the VM after the timeout",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, ref := range args {
				_, vm, err := lookup(g, ref)
				if err != nil {
					return err
				}
				if err := stopVM(vm, timeout); err != nil {
					return err
				}
				fmt.Println(vm.ID)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait before killing the VM")
	return cmd
}

// stopVM stops a running VM and waits until its supervisor has recorded the end.
func stopVM(vm *state.VM, timeout int) error {
	c, err := supervisor.Dial(vm.Dir)
	if err != nil {
		return nil // not running: nothing to stop
	}
	defer c.Close()
	if _, err := c.Attach(); err != nil {
		return err
	}
	if err := c.Stop(timeout); err != nil {
		return err
	}
	_, err = c.Copy(io.Discard, io.Discard)
	if err != nil && !errors.Is(err, supervisor.ErrNotRunning) {
		return err
	}
	waitUnowned(vm.Dir)
	return nil
}

// waitUnowned returns once the supervisor has released the VM (it has recorded the exit).
func waitUnowned(dir string) {
	f, err := os.Open(filepath.Join(dir, supervisor.LockFile))
	if err != nil {
		return
	}
	defer f.Close()
	unix.Flock(int(f.Fd()), unix.LOCK_SH) // blocks until the supervisor lets go
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
}

func newKillCommand(g *globalFlags) *cobra.Command {
	var sig string
	cmd := &cobra.Command{
		Use:   "kill [--signal SIG] VM",
		Short: "Send a signal to a VM's workload (default KILL)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseSignal(sig)
			if err != nil {
				return err
			}
			_, vm, err := lookup(g, args[0])
			if err != nil {
				return err
			}
			c, err := supervisor.Dial(vm.Dir)
			if err != nil {
				return fmt.Errorf("%s: %w", vm.ID, err)
			}
			defer c.Close()
			return c.Signal(n)
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal name or number")
	return cmd
}

func parseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return n, nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if n := unix.SignalNum(name); n != 0 {
		return int(n), nil
	}
	return 0, fmt.Errorf("--signal: %q is not a signal name or number", s)
}

func newRmCommand(g *globalFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] VM...",
		Short: "Remove VMs (their record, logs and files)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, ref := range args {
				st, vm, err := lookup(g, ref)
				if err != nil {
					return err
				}
				if supervisor.Owned(vm.Dir) {
					if !force {
						return fmt.Errorf("VM %s is running: stop it first, or rm -f", vm.ID)
					}
					if err := stopVM(vm, 0); err != nil {
						return err
					}
				}
				if err := os.RemoveAll(vm.Dir); err != nil {
					return err
				}
				if err := st.Delete(vm.ID); err != nil {
					return err
				}
				fmt.Println(vm.ID)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop a running VM first")
	return cmd
}

func newInspectCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect VM",
		Short: "Print a VM's record as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, vm, err := lookup(g, args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(vm)
		},
	}
}

func newWaitCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "wait VM",
		Short: "Wait for a VM to end and print its exit code",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, vm, err := lookup(g, args[0])
			if err != nil {
				return err
			}
			if c, err := supervisor.Dial(vm.Dir); err == nil {
				if _, err := c.Attach(); err == nil {
					c.Copy(io.Discard, io.Discard)
				}
				c.Close()
			}
			// The supervisor may be between closing its socket and recording the exit: its
			// lock is released only after the record is written.
			waitUnowned(vm.Dir)
			if vm, err = st.Get(vm.ID); err != nil {
				return err
			}
			if vm.ExitCode == nil {
				return fmt.Errorf("VM %s ended without an exit code: %s", vm.ID, vm.Error)
			}
			fmt.Println(*vm.ExitCode)
			return nil
		},
	}
}

func newExecCommand(g *globalFlags) *cobra.Command {
	var env []string
	var workdir, user string
	cmd := &cobra.Command{
		Use:   "exec [flags] VM -- CMD [ARGS...]",
		Short: "Run an extra command in a running VM; its exit code is ours",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			argv := args[1:]
			if argv[0] == "--" {
				argv = argv[1:]
			}
			if len(argv) == 0 {
				return errors.New("no command: usage: firegopher exec VM -- CMD [ARGS...]")
			}
			_, vm, err := lookup(g, args[0])
			if err != nil {
				return err
			}
			c, err := supervisor.Dial(vm.Dir)
			if err != nil {
				return fmt.Errorf("%s: %w", vm.ID, err)
			}
			defer c.Close()
			if err := c.Exec(agent.Exec{Argv: argv, Env: env, WorkDir: workdir, User: user}); err != nil {
				return err
			}
			exit, err := c.Copy(os.Stdout, os.Stderr)
			if err != nil {
				return err
			}
			if exit.Code == 125 && exit.Error != "" {
				return fmt.Errorf("exec: %s", exit.Error)
			}
			return exitCode(exit.Code)
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "extra environment KEY=VALUE")
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory")
	cmd.Flags().StringVarP(&user, "user", "u", "", "user (default: the VM's)")
	return cmd
}

func newGCCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove what crashed firegopher processes left behind (never touches live VMs)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := g.state()
			if err != nil {
				return err
			}
			report, err := supervisor.GC(st, g.vmsDir())
			if err != nil {
				return err
			}
			// Scratch files of pulls and builds that crashed; an hour outlives any live one.
			if store, serr := g.store(); serr == nil {
				tmp, _ := oci.CleanTmp(store, time.Hour)
				for _, p := range tmp {
					report = append(report, "cache scratch "+p+": left by a crashed pull or build; removed")
				}
			}
			for _, line := range report {
				fmt.Println(line)
			}
			if err == nil && len(report) == 0 {
				fmt.Println("nothing to clean up")
			}
			return err
		},
	}
}
