package supervisor

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"syscall"

	"github.com/firegopher/firegopher/internal/network"
	"github.com/firegopher/firegopher/internal/network/dhcp"
	"github.com/firegopher/firegopher/internal/network/firewall"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// DHCP modes: how the guest learns its address.
const (
	DHCPEmbedded = "embedded" // our DHCP responder on the TAP (default)
	DHCPDnsmasq  = "dnsmasq"  // the seed's dnsmasq, with the arguments of its dnsmasq-tap@ unit
	DHCPStatic   = "static"   // no DHCP: init configures the address from its config
)

// NetLaunch describes a VM's network: a TAP with a /30 from Pool, chosen from RunID and
// Machine, persisted in the allocator database DB.
type NetLaunch struct {
	Pool    string   `json:"pool"`
	DB      string   `json:"db"`
	RunID   string   `json:"run_id"`
	Machine string   `json:"machine"`
	DHCP    string   `json:"dhcp"`
	DNS     []string `json:"dns,omitempty"`
	MTU     int      `json:"mtu,omitempty"`
	// AllowVMToVM lets guests reach each other (host-wide).
	AllowVMToVM bool `json:"allow_vm_to_vm,omitempty"`
}

// netState is what the network steps hold for their undos.
type netState struct {
	launch   NetLaunch
	pool     netip.Prefix
	dns      []netip.Addr
	alloc    *network.Allocator
	slot     network.Slot
	stopDHCP func() error
	dnsmasq  *exec.Cmd
}

// WithNetwork returns steps with the network steps inserted before the initrd is written
// (the guest's config carries its MAC and, for static mode, its address).
func WithNetwork(steps Steps) (Steps, error) {
	var err error
	for _, st := range []Step{
		{Name: "prepare-host", Do: prepareHost},
		{Name: "allocate-address", Do: allocateAddress, Undo: releaseAddress},
		{Name: "create-tap", Do: createTAP, Undo: deleteTAP},
		{Name: "firewall-tap", Do: firewallTAP, Undo: unfirewallTAP},
		{Name: "serve-dhcp", Do: serveDHCP, Undo: stopDHCP},
	} {
		if steps, err = steps.InsertBefore("write-initrd", st); err != nil {
			return nil, err
		}
	}
	return steps, nil
}

// parse validates the launch's network fields; everything else takes typed values.
func (l NetLaunch) parse() (netip.Prefix, []netip.Addr, error) {
	pool, err := netip.ParsePrefix(l.Pool)
	if err != nil {
		return pool, nil, fmt.Errorf("--pool: %q: %v", l.Pool, err)
	}
	if err := network.ValidatePool(pool); err != nil {
		return pool, nil, fmt.Errorf("--pool: %w", err)
	}
	var dns []netip.Addr
	for _, d := range l.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil || !a.Is4() {
			return pool, nil, fmt.Errorf("--dns: %q is not an IPv4 address", d)
		}
		dns = append(dns, a)
	}
	switch l.DHCP {
	case DHCPEmbedded, DHCPDnsmasq, DHCPStatic:
	default:
		return pool, nil, fmt.Errorf("--dhcp: %q, want %s, %s or %s", l.DHCP, DHCPEmbedded, DHCPDnsmasq, DHCPStatic)
	}
	return pool, dns, nil
}

// ValidateNet checks a network description before anything is created.
func ValidateNet(l NetLaunch) error {
	_, _, err := l.parse()
	return err
}

func prepareHost(_ context.Context, vm *VM) (err error) {
	vm.net.pool, vm.net.dns, err = vm.Net.parse()
	if err != nil {
		return err
	}
	vm.net.launch = *vm.Net
	return firewall.Prepare(vm.Log, firewall.HostConfig{Pool: vm.net.pool, AllowVMToVM: vm.Net.AllowVMToVM})
}

func allocateAddress(_ context.Context, vm *VM) error {
	a, err := network.OpenAllocator(vm.Net.DB, vm.net.pool)
	if err != nil {
		return err
	}
	vm.net.alloc = a
	if vm.net.slot, err = a.Allocate(vm.Net.RunID, vm.Net.Machine, network.HostAddrsInUse(vm.Log)); err != nil {
		return err
	}
	n := &vmconfig.Network{MAC: vm.net.slot.GuestMAC().String(), MTU: vm.Net.MTU, DHCP: vm.Net.DHCP != DHCPStatic}
	if !n.DHCP {
		n.Address = vm.net.slot.GuestPrefix().String()
		n.Gateway = vm.net.slot.Host.String()
		n.DNS = vm.Net.DNS
		if len(n.DNS) == 0 {
			n.DNS = []string{dhcp.DefaultDNS[0].String()}
		}
	}
	vm.Config.Network = n
	vm.Log.Debug("address allocated", "tap", vm.net.slot.TAP, "guest", vm.net.slot.Guest)
	return nil
}

func releaseAddress(vm *VM) error { return vm.net.alloc.Release(vm.Net.RunID, vm.Net.Machine) }

func createTAP(_ context.Context, vm *VM) error {
	return network.CreateTAP(vm.Log, vm.net.slot.TAP, vm.net.slot.HostPrefix(), vm.Net.MTU)
}

func deleteTAP(vm *VM) error { return network.DeleteTAP(vm.Log, vm.net.slot.TAP) }

func firewallTAP(_ context.Context, vm *VM) error {
	return firewall.AddTAP(vm.Log, vm.net.slot.TAP, vm.net.slot.Guest)
}

func unfirewallTAP(vm *VM) error { return firewall.RemoveTAP(vm.Log, vm.net.slot.TAP) }

func serveDHCP(_ context.Context, vm *VM) error {
	s := vm.net.slot
	switch vm.Net.DHCP {
	case DHCPEmbedded:
		stop, err := dhcp.ServeDHCP(context.Background(), vm.Log, s.TAP, dhcp.Lease{
			Guest: s.Guest, Host: s.Host, DNS: vm.net.dns, Hostname: vm.Config.Hostname, MTU: vm.Net.MTU, MAC: s.GuestMAC(),
		})
		vm.net.stopDHCP = stop
		return err
	case DHCPDnsmasq:
		if err := os.MkdirAll(dhcp.LeaseDir, 0o755); err != nil {
			return err
		}
		if _, err := exec.LookPath(dhcp.DnsmasqPath); err != nil {
			return fmt.Errorf("%s not found: install the Debian package dnsmasq-base", dhcp.DnsmasqPath)
		}
		// The same arguments the seed's dnsmasq-tap@TAP:HOST:GUEST.service runs with.
		cmd := exec.Command(dhcp.DnsmasqPath, dhcp.DnsmasqArgs(s.TAP, s.Host, s.Guest, vm.net.dns)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start dnsmasq: %w", err)
		}
		vm.net.dnsmasq = cmd
	}
	return nil
}

func stopDHCP(vm *VM) error {
	if vm.net.stopDHCP != nil {
		return vm.net.stopDHCP()
	}
	if vm.net.dnsmasq != nil {
		vm.net.dnsmasq.Process.Kill()
		vm.net.dnsmasq.Wait()
		os.Remove(dhcp.LeaseFile(vm.net.slot.TAP))
	}
	return nil
}

// netRecord is the network part of a VM's record, enough for gc to undo it.
func (vm *VM) netRecord() *state.Network {
	if vm.Net == nil {
		return nil
	}
	n := &state.Network{Pool: vm.Net.Pool, DB: vm.Net.DB, RunID: vm.Net.RunID, Machine: vm.Net.Machine}
	if vm.net.alloc != nil {
		n.TAP, n.Host, n.Guest = vm.net.slot.TAP, vm.net.slot.Host.String(), vm.net.slot.Guest.String()
	}
	return n
}

// cleanNetwork undoes a lost VM's network from its record: firewall entries, TAP, slot.
// The record may predate the allocation (the supervisor died while allocating): the
// allocator, asked by run id and machine, knows the TAP if there is one.
func cleanNetwork(n *state.Network) []string {
	var done []string
	pool, err := netip.ParsePrefix(n.Pool)
	if err != nil {
		return nil
	}
	a, err := network.OpenAllocator(n.DB, pool)
	if err != nil {
		return nil
	}
	alloc, found, err := a.Lookup(n.RunID, n.Machine)
	if err != nil || !found {
		return nil
	}
	tap := alloc.Slot.TAP
	if err := firewall.RemoveTAP(nil, tap); err == nil {
		done = append(done, "firewall entries of "+tap)
	}
	if err := network.DeleteTAP(nil, tap); err == nil {
		done = append(done, "tap "+tap)
	}
	if a.Release(n.RunID, n.Machine) == nil {
		done = append(done, "address "+alloc.Slot.Guest.String())
	}
	return done
}
