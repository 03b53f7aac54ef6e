package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/firegopher/firegopher/internal/network"
	"github.com/firegopher/firegopher/internal/network/dhcp"
	"github.com/firegopher/firegopher/internal/network/firewall"
	"github.com/firegopher/firegopher/internal/spec"
)

// registerNetFlags adds the network flags of run (and of anything else that makes a VM).
func registerNetFlags(fl *pflag.FlagSet, n *spec.NetFlags) {
	fl.BoolVar(&n.Enabled, "net", false, "give the VM a network: a TAP with a /30 from --pool, NAT to the outside")
	fl.StringVar(&n.Pool, "pool", network.DefaultPool.String(), "address pool the VM's /30 comes from")
	fl.StringVar(&n.DHCP, "dhcp", string(spec.DHCPEmbedded), "how the guest gets its address: embedded, dnsmasq or static")
	fl.StringSliceVar(&n.DNS, "dns", nil, "DNS servers for the guest (default 1.1.1.1)")
	fl.IntVar(&n.MTU, "mtu", 0, "MTU of the VM's interface (default: the kernel's)")
	fl.BoolVar(&n.AllowVMToVM, "allow-vm-traffic", false, "let VMs reach each other (host-wide)")
}

func parsePool(s string) (netip.Prefix, error) {
	pool, err := netip.ParsePrefix(s)
	if err != nil {
		return pool, fmt.Errorf("--pool: %q: %v", s, err)
	}
	if err := network.ValidatePool(pool); err != nil {
		return pool, fmt.Errorf("--pool: %w", err)
	}
	return pool, nil
}

func newHostCommand(g *globalFlags) *cobra.Command {
	var pool string
	var allow bool
	host := &cobra.Command{Use: "host", Short: "Prepare, check or reset this host's networking for VMs"}
	host.PersistentFlags().StringVar(&pool, "pool", network.DefaultPool.String(), "address pool of the VMs")
	host.PersistentFlags().BoolVar(&allow, "allow-vm-traffic", false, "let VMs reach each other")
	cfg := func() (firewall.HostConfig, error) {
		p, err := parsePool(pool)
		return firewall.HostConfig{Pool: p, AllowVMToVM: allow}, err
	}
	host.AddCommand(
		&cobra.Command{
			Use: "prepare", Short: "IPv4 forwarding on, rp_filter off, NAT and filter rules in table inet firegopher (idempotent)",
			Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				c, err := cfg()
				if err != nil {
					return err
				}
				return firewall.Prepare(g.logger(), c)
			},
		},
		&cobra.Command{
			Use: "reset", Short: "Remove table inet firegopher whole; nothing else is touched", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error { return firewall.Reset(g.logger()) },
		},
		&cobra.Command{
			Use: "check", Short: "Show what host preparation is missing", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				c, err := cfg()
				if err != nil {
					return err
				}
				missing, err := firewall.Check(c)
				if err != nil {
					return err
				}
				if len(missing) == 0 {
					fmt.Println("host is prepared")
					return nil
				}
				for _, m := range missing {
					fmt.Println("missing:", m)
				}
				return exitCode(1)
			},
		},
		&cobra.Command{
			Use: "install-units [DIR]", Short: "Install the seed's dnsmasq-tap@.service template (default /etc/systemd/system)",
			Args: cobra.MaximumNArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				dir := "/etc/systemd/system"
				if len(args) == 1 {
					dir = args[0]
				}
				if err := dhcp.InstallUnits(dir); err != nil {
					return err
				}
				fmt.Printf("installed %s in %s (then: systemctl daemon-reload)\n", dhcp.UnitName, dir)
				return nil
			},
		},
	)
	return host
}

func newNetCommand(g *globalFlags) *cobra.Command {
	var pool string
	net := &cobra.Command{Use: "net", Short: "Network address planning"}
	plan := &cobra.Command{
		Use:   "plan RUN MACHINE...",
		Short: "Print the preferred TAP and /30 of each machine of a run (the seed's scheme)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			p, err := parsePool(pool)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MACHINE\tTAP\tHOST\tGUEST\tSUBNET")
			for _, m := range args[1:] {
				s := network.PreferredSlot(p, args[0], m)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m, s.TAP, s.Host, s.Guest, s.Subnet)
			}
			return tw.Flush()
		},
	}
	plan.Flags().StringVar(&pool, "pool", network.DefaultPool.String(), "address pool")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the /30s handed out to VMs",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			p, err := parsePool(pool)
			if err != nil {
				return err
			}
			a, err := network.OpenAllocator(filepath.Join(g.stateDir, "network.db"), p)
			if err != nil {
				return err
			}
			allocs, err := a.List()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN\tMACHINE\tTAP\tHOST\tGUEST")
			for _, al := range allocs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", al.RunID, al.Machine, al.Slot.TAP, al.Slot.Host, al.Slot.Guest)
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVar(&pool, "pool", network.DefaultPool.String(), "address pool")
	net.AddCommand(plan, ls)
	return net
}
