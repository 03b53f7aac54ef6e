package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/network"
	kt "github.com/firegopher/firegopher/internal/run"
	"github.com/firegopher/firegopher/internal/spec"
)

// upFlags are what up and down share: the vars files and how the run is networked.
type upFlags struct {
	files     []string
	inventory string
	pool      string
	dhcp      string
	vmm       string
}

func (g *globalFlags) upper(f *upFlags) (*kt.Upper, error) {
	h, err := g.host()
	if err != nil {
		return nil, err
	}
	pool, err := parsePool(f.pool)
	if err != nil {
		return nil, err
	}
	u := &kt.Upper{Host: h, Log: h.Log, Out: os.Stderr, SuperviseArgv: g.superviseArgv,
		Pool: pool, DHCP: spec.DHCPMode(f.dhcp), VMM: spec.VMM{Backend: f.vmm}, Inventory: f.inventory}
	if init, err := findInit(); err == nil {
		u.Init = init
	}
	return u, nil
}

func loadRun(files []string) (*kt.Run, error) {
	return kt.Load(files, kt.LoadOptions{})
}

func newUpCommand(g *globalFlags) *cobra.Command {
	var f upFlags
	cmd := &cobra.Command{
		Use:   "up -f VARS.yml [-f MORE.yml]",
		Short: "Bring up the machines of a kernel-testing run and write its Ansible inventory",
		Example: `  cd kernel-testing/ansible-playbooks
  firegopher up -f group_vars/all/vars.yml -f ~/my-vars.yml
  ansible-playbook common.yml git-repos.yml scap-open.yml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(f.files) == 0 {
				return errors.New("-f: give at least one vars file (later files win per top-level key)")
			}
			if _, err := spec.ParseNet(spec.NetFlags{Enabled: true, Pool: f.pool, DHCP: f.dhcp}); err != nil {
				return err
			}
			r, err := loadRun(f.files)
			if err != nil {
				return err
			}
			u, err := g.upper(&f)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			statuses, err := u.Up(ctx, r)
			for _, s := range statuses {
				if !s.Ready && len(s.Console) > 0 {
					fmt.Fprintf(os.Stderr, "%s: last lines of its console:\n  %s\n", s.Machine.Name, strings.Join(s.Console, "\n  "))
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "run %s: %d machines ready; inventory written\n", r.ID, len(statuses))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.files, "file", "f", nil, "vars file (repeatable; later files win per top-level key)")
	fl.StringVar(&f.inventory, "inventory", "", "where to write inventory.ini (default: the playbook dir's, where their ansible.cfg reads it)")
	fl.StringVar(&f.pool, "pool", network.DefaultPool.String(), "address pool the machines' /30s come from")
	fl.StringVar(&f.dhcp, "dhcp", string(spec.DHCPEmbedded), "DHCP for the machines: embedded or dnsmasq (the seed's dnsmasq-tap@ arguments)")
	fl.StringVar(&f.vmm, "vmm", os.Getenv("FIREGOPHER_VMM"), "VMM backend: firecracker or qemu (default: firecracker where KVM works and a release is installed)")
	return cmd
}

// runID is the run named on the command line, or the run_id of the vars files given.
func runID(args []string, files []string) (string, error) {
	switch {
	case len(args) == 1 && len(files) == 0:
		return args[0], nil
	case len(args) == 0 && len(files) > 0:
		r, err := loadRun(files)
		if err != nil {
			return "", err
		}
		return r.ID, nil
	}
	return "", errors.New("name the run: RUN_ID, or -f VARS.yml [-f ...] as given to up")
}

func newDownCommand(g *globalFlags) *cobra.Command {
	var f upFlags
	var timeout int
	cmd := &cobra.Command{
		Use:   "down RUN_ID | -f VARS.yml [-f ...]",
		Short: "Stop and remove every machine of a run (exactly that run)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := runID(args, f.files)
			if err != nil {
				return err
			}
			u, err := g.upper(&f)
			if err != nil {
				return err
			}
			removed, err := u.Down(id, time.Duration(timeout)*time.Second)
			for _, name := range removed {
				fmt.Println(name)
			}
			return err
		},
	}
	cmd.Flags().StringArrayVarP(&f.files, "file", "f", nil, "vars file, as given to up")
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds a machine gets to shut down before it is killed")
	f.pool = network.DefaultPool.String()
	return cmd
}

func newInventoryCommand(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inventory RUN_ID",
		Short: "Print a run's Ansible inventory (--json: dynamic-inventory format)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := g.upper(&upFlags{pool: network.DefaultPool.String()})
			if err != nil {
				return err
			}
			out, err := u.InventoryOf(args[0], asJSON)
			if err != nil {
				return err
			}
			_, err = os.Stdout.Write(out)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "Ansible's dynamic-inventory JSON")
	return cmd
}

func newSSHCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ssh RUN_ID/NAME [-- CMD...]",
		Short: "ssh into a machine of a run, with the run's key, pinned host keys and TAP",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, vm, err := lookup(g, args[0])
			if err != nil {
				return err
			}
			if vm.Run == "" || vm.Network == nil || vm.Network.Guest == "" {
				return fmt.Errorf("%s is not a machine of a run with an address", args[0])
			}
			u, err := g.upper(&upFlags{pool: network.DefaultPool.String()})
			if err != nil {
				return err
			}
			rec, err := u.LoadRecord(vm.Run)
			if err != nil {
				return err
			}
			if _, err := exec.LookPath("ssh"); err != nil {
				return errors.New("ssh not found: install the Debian package openssh-client")
			}
			argv := []string{"-i", rec.PrivateKey, "-o", "BindInterface=" + vm.Network.TAP, "-o", "IdentitiesOnly=yes",
				"-o", "UserKnownHostsFile=" + rec.KnownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
				rec.User + "@" + vm.Network.Guest}
			rest := args[1:]
			if len(rest) > 0 && rest[0] == "--" {
				rest = rest[1:]
			}
			c := exec.CommandContext(context.Background(), "ssh", append(argv, rest...)...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
			err = c.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return exitCode(ee.ExitCode())
			}
			return err
		},
	}
	cmd.Flags().SetInterspersed(false)
	return cmd
}
