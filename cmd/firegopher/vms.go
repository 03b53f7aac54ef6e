package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
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
	"github.com/firegopher/firegopher/internal/console"
	"github.com/firegopher/firegopher/internal/exitcode"
	"github.com/firegopher/firegopher/internal/proxy/vmsource"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/supervisor"
)

func newSuperviseCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:    "supervise ID",
		Short:  "Own one detached VM until it ends (started by run -d)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := g.host()
			if err != nil {
				return err
			}
			// Detached from the terminal; SIGTERM (e.g. a host shutdown) stops the VM in order.
			signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM)
			defer stop()
			return h.ServeDetached(ctx, args[0])
		},
	}
}

// superviseArgv is the command line of a detached supervisor for VM id.
func (g *globalFlags) superviseArgv(id string) []string {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	argv := []string{exe, "supervise", "--state-dir", g.stateDir, id}
	if g.debug {
		argv = append(argv, "--debug")
	}
	return argv
}

func lookup(g *globalFlags, ref string) (*supervisor.Host, *state.VM, error) {
	h, err := g.host()
	if err != nil {
		return nil, nil, err
	}
	vm, err := h.Lookup(ref)
	return h, vm, err
}

// eachVM does what to every VM refs name, in order, printing each one's id once done; it
// stops at the first error.
func eachVM(g *globalFlags, refs []string, what func(*supervisor.Host, *state.VM) error) error {
	for _, ref := range refs {
		h, vm, err := lookup(g, ref)
		if err != nil {
			return err
		}
		if err := what(h, vm); err != nil {
			return err
		}
		fmt.Println(vm.ID)
	}
	return nil
}

func newPsCommand(g *globalFlags) *cobra.Command {
	var all, asJSON bool
	var runID string
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List VMs (running ones; -a for all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := g.host()
			if err != nil {
				return err
			}
			st, err := h.State()
			if err != nil {
				return err
			}
			vms, err := st.List()
			if err != nil {
				return err
			}
			shown := []state.VM{}
			for _, vm := range vms {
				if (all || vm.Status != state.Exited) && (runID == "" || vm.Run == runID) {
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
				name := vm.Name
				if vm.Run != "" {
					name = vm.Run + "/" + vm.Name
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\n", vm.ID, name, describeStatus(vm),
					time.Since(vm.CreatedAt).Round(time.Second), truncateCmd(commandOf(vm)))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include VMs that have exited")
	cmd.Flags().StringVar(&runID, "run", "", "only the machines of this run (firegopher up)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func describeStatus(vm state.VM) string {
	switch {
	case vm.Status == state.Exited && vm.ExitCode != nil:
		return fmt.Sprintf("exited (%d)", *vm.ExitCode)
	case vm.Status == state.Exited:
		return "exited (error)"
	case !supervisor.Running(&vm) && vm.Status == state.Running:
		return "lost (run gc)"
	}
	return string(vm.Status)
}

func commandOf(vm state.VM) []string {
	if vm.Machine == nil {
		return nil
	}
	if vm.Machine.Mode == spec.ModeSystem {
		return []string{"(system)"}
	}
	return vm.Machine.Process.Cmd
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
			return eachVM(g, args, func(h *supervisor.Host, vm *state.VM) error {
				// A proxy routing to it finishes what is in flight first, up to the timeout.
				if err := vmsource.Drain(h, vm, time.Duration(timeout)*time.Second); err != nil {
					return err
				}
				return h.Stop(vm, time.Duration(timeout)*time.Second)
			})
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait before killing the VM")
	return cmd
}

func newStartCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "start VM...",
		Short: "Start exited detached VMs again (a fresh root disk from the image; volumes, ports and service kept)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVM(g, args, func(h *supervisor.Host, vm *state.VM) error {
				return h.Start(vm, g.superviseArgv(vm.ID))
			})
		},
	}
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
			return eachVM(g, args, func(h *supervisor.Host, vm *state.VM) error { return h.Remove(vm, force) })
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
			h, vm, err := lookup(g, args[0])
			if err != nil {
				return err
			}
			if vm, err = h.Wait(vm); err != nil {
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
	var interactive, tty bool
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
			e := agent.Exec{Argv: argv, Env: env, WorkDir: workdir, User: user, Stdin: interactive}
			var terminal *console.Terminal
			var err error
			if tty {
				if terminal, err = console.Open(os.Stdin); err != nil {
					return err
				}
				size := terminal.Size()
				e.TTY = &size
				if t := os.Getenv("TERM"); t != "" {
					e.Env = append([]string{"TERM=" + t}, e.Env...)
				}
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
			if err := c.Exec(e); err != nil {
				return err
			}
			stdio, restore, err := attachStdio(cmd.Context(), interactive, terminal)
			if err != nil {
				return err
			}
			exit, err := c.Stream(cmd.Context(), stdio)
			restore()
			if err != nil {
				return err
			}
			if exit.Code == exitcode.FiregopherError && exit.Error != "" {
				return fmt.Errorf("exec: %s", exit.Error)
			}
			return exitCode(exit.Code)
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "extra environment KEY=VALUE")
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory")
	cmd.Flags().StringVarP(&user, "user", "u", "", "user (default: the VM's)")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "pass this terminal's stdin to the command")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "give the command a terminal")
	return cmd
}

func newAttachCommand(g *globalFlags) *cobra.Command {
	var detachKeys string
	cmd := &cobra.Command{
		Use:   "attach [--detach-keys KEYS] VM",
		Short: "Attach this terminal to a running VM's workload (Ctrl-P Ctrl-Q detaches)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := console.ParseDetachKeys(detachKeys)
			if err != nil {
				return err
			}
			_, vm, err := lookup(g, args[0])
			if err != nil {
				return err
			}
			var p spec.Process
			if vm.Machine != nil {
				p = vm.Machine.Process
			}
			var terminal *console.Terminal
			if p.TTY != nil {
				if terminal, err = console.Open(os.Stdin); err != nil {
					return err
				}
			}
			c, err := supervisor.Dial(vm.Dir)
			if err != nil {
				return fmt.Errorf("%s: %w", vm.ID, err)
			}
			defer c.Close()
			// Output already logged is not replayed (`logs` does that).
			if _, err := c.Attach(); err != nil {
				return err
			}
			stdio, restore, err := attachStdio(cmd.Context(), false, terminal)
			if err != nil {
				return err
			}
			if p.Stdin {
				stdio.Stdin = console.NewDetachReader(os.Stdin, keys)
			}
			if terminal != nil {
				size := terminal.Size()
				c.Resize(size) // the attaching terminal's size, now
			}
			exit, err := c.Stream(cmd.Context(), stdio)
			restore()
			if errors.Is(err, console.ErrDetached) {
				fmt.Fprintf(os.Stderr, "\ndetached from %s; it runs on\n", vm.ID)
				return nil
			}
			if err != nil {
				return err
			}
			return exitCode(exit.Code)
		},
	}
	cmd.Flags().StringVar(&detachKeys, "detach-keys", console.DefaultDetachKeys, "key sequence that detaches (docker's syntax)")
	return cmd
}

func newGCCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove what crashed firegopher processes left behind (never touches live VMs)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := g.host()
			if err != nil {
				return err
			}
			report, err := h.GC()
			if err != nil {
				return err
			}
			// Scratch files of pulls and builds that crashed; an hour outlives any live one.
			if store, serr := h.Store(); serr == nil {
				tmp, _ := oci.CleanTmp(store, time.Hour)
				for _, p := range tmp {
					report = append(report, "cache scratch "+p+": left by a crashed pull or build; removed")
				}
			}
			for _, line := range report {
				fmt.Println(line)
			}
			if len(report) == 0 {
				fmt.Println("nothing to clean up")
			}
			return nil
		},
	}
}
