package supervisor

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"syscall"

	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/network"
	"github.com/firegopher/firegopher/internal/network/dhcp"
	"github.com/firegopher/firegopher/internal/network/firewall"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
)

// netState is what the network steps made, for their undos.
type netState struct {
	alloc    *network.Allocator
	slot     network.Slot
	stopDHCP func() error
	dnsmasq  *exec.Cmd
	// netns is the VM's network namespace when the backend runs VMs in their own
	// (vmm.Caps.NetNS); its host end carries the slot's TAP name.
	netns *jail.NetNS
}

// allocated says whether the address step has run.
func (n *netState) allocated() bool { return n.alloc != nil }

// guestNetwork is the interface's configuration for init (nil without a network).
func (n *netState) guestNetwork(m *spec.Network) *vmconfig.Network {
	if m == nil || !n.allocated() {
		return nil
	}
	g := &vmconfig.Network{MAC: n.slot.GuestMAC().String(), MTU: m.MTU, DHCP: m.DHCP != spec.DHCPStatic}
	if !g.DHCP {
		g.Address = n.slot.GuestPrefix().String()
		g.Gateway = n.slot.Host.String()
		for _, d := range dnsOf(m) {
			g.DNS = append(g.DNS, d.String())
		}
	}
	return g
}

func dnsOf(m *spec.Network) []netip.Addr {
	if len(m.DNS) == 0 {
		return dhcp.DefaultDNS
	}
	return m.DNS
}

// guestNetwork is the guest's interface configuration: the network steps' or the
// attached NIC's (nil: no network).
func (vm *VM) guestNetwork() *vmconfig.Network {
	if a := vm.Machine.AttachedNIC; a != nil {
		g := &vmconfig.Network{MAC: a.MAC, Address: a.Address.String(), MTU: a.MTU}
		if a.Gateway.IsValid() {
			g.Gateway = a.Gateway.String()
		}
		for _, d := range a.DNS {
			g.DNS = append(g.DNS, d.String())
		}
		return g
	}
	return vm.net.guestNetwork(vm.Machine.Network)
}

func (vm *VM) nics() []vmm.NIC {
	if a := vm.Machine.AttachedNIC; a != nil {
		return []vmm.NIC{{TAP: a.TAP, MAC: a.MAC, NetNS: a.NetNS}}
	}
	if !vm.net.allocated() {
		return nil
	}
	tap := vm.net.slot.TAP
	if vm.Backend.Caps().NetNS {
		tap = jail.TAP // inside the VM's namespace
	}
	return []vmm.NIC{{TAP: tap, MAC: vm.net.slot.GuestMAC().String()}}
}

// withNetwork wraps a network step: it does nothing for a machine without a network.
func withNetwork(do func(context.Context, *VM, *spec.Network) error) func(context.Context, *VM) error {
	return func(ctx context.Context, vm *VM) error {
		if vm.Machine.Network == nil {
			return nil
		}
		return do(ctx, vm, vm.Machine.Network)
	}
}

var (
	recordNetwork = withNetwork(func(_ context.Context, vm *VM, _ *spec.Network) error {
		_, err := vm.State.Update(vm.ID(), func(r *state.VM) error { r.Network = vm.netRecord(); return nil })
		return err
	})
	prepareHost = withNetwork(func(_ context.Context, vm *VM, n *spec.Network) error {
		return firewall.Prepare(vm.Log, firewall.HostConfig{Pool: n.Pool, AllowVMToVM: n.AllowVMToVM})
	})
	allocateAddress = withNetwork(func(_ context.Context, vm *VM, n *spec.Network) error {
		a, err := network.OpenAllocator(vm.NetworkDB, n.Pool)
		if err != nil {
			return err
		}
		slot, err := a.Allocate(n.RunID, n.Slot, network.HostAddrsInUse(vm.Log))
		if err != nil {
			return err
		}
		vm.net.alloc, vm.net.slot = a, slot
		vm.Log.Debug("address allocated", "tap", slot.TAP, "guest", slot.Guest)
		return nil
	})
	// createTAP makes the host interface the guest is reached through, named after the
	// slot: a TAP, or for a backend with a network namespace per VM, that namespace (with
	// jail.TAP inside) joined to the host by a veth whose host end takes the TAP's name and
	// address, so that the firewall, DHCP and BindInterface see what they would see on QEMU.
	createTAP = withNetwork(func(_ context.Context, vm *VM, n *spec.Network) error {
		s := vm.net.slot
		if !vm.Backend.Caps().NetNS {
			return network.CreateTAP(vm.Log, s.TAP, s.HostPrefix(), n.MTU)
		}
		ns, err := jail.CreateNetNS(jail.NetNSName(vm.ID()), s.TAP)
		if err != nil {
			return err
		}
		if err := network.ConfigureLink(vm.Log, s.TAP, s.HostPrefix(), n.MTU); err != nil {
			if rerr := ns.Remove(); rerr != nil {
				vm.Log.Warn("remove the half-made network namespace", "error", rerr)
			}
			return err
		}
		vm.net.netns = ns
		vm.Log.Debug("network namespace ready", "netns", ns.Name, "host_if", s.TAP)
		return nil
	})
	firewallTAP = withNetwork(func(_ context.Context, vm *VM, _ *spec.Network) error {
		return firewall.AddTAP(vm.Log, vm.net.slot.TAP, vm.net.slot.Guest)
	})
	serveDHCP = withNetwork(func(_ context.Context, vm *VM, n *spec.Network) error {
		s := vm.net.slot
		switch n.DHCP {
		case spec.DHCPEmbedded:
			stop, err := dhcp.ServeDHCP(context.Background(), vm.Log, s.TAP, dhcp.Lease{
				Guest: s.Guest, Host: s.Host, DNS: n.DNS, Hostname: vm.Machine.Hostname(), MTU: n.MTU, MAC: s.GuestMAC(),
				Acked: vm.markLeased,
			})
			vm.net.stopDHCP = stop
			return err
		case spec.DHCPDnsmasq:
			if err := os.MkdirAll(dhcp.LeaseDir, 0o755); err != nil {
				return err
			}
			if _, err := exec.LookPath(dhcp.DnsmasqPath); err != nil {
				return fmt.Errorf("%s not found: install the Debian package dnsmasq-base", dhcp.DnsmasqPath)
			}
			// The same arguments the seed's dnsmasq-tap@TAP:HOST:GUEST.service runs with.
			cmd := exec.Command(dhcp.DnsmasqPath, dhcp.DnsmasqArgs(s.TAP, s.Host, s.Guest, n.DNS)...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				return fmt.Errorf("start dnsmasq: %w", err)
			}
			vm.net.dnsmasq = cmd
		}
		return nil
	})
)

func unrecordNetwork(vm *VM) error {
	if vm.Machine.Network == nil {
		return nil
	}
	_, err := vm.State.Update(vm.ID(), func(r *state.VM) error { r.Network = nil; return nil })
	return err
}

func releaseAddress(vm *VM) error {
	if !vm.net.allocated() {
		return nil
	}
	n := vm.Machine.Network
	return vm.net.alloc.Release(n.RunID, n.Slot)
}

func deleteTAP(vm *VM) error {
	if vm.Machine.Network == nil {
		return nil
	}
	if vm.net.netns != nil {
		return vm.net.netns.Remove()
	}
	return network.DeleteTAP(vm.Log, vm.net.slot.TAP)
}

func unfirewallTAP(vm *VM) error {
	if vm.Machine.Network == nil {
		return nil
	}
	return firewall.RemoveTAP(vm.Log, vm.net.slot.TAP)
}

func stopDHCP(vm *VM) error {
	os.Remove(vm.path(LeasedFile))
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
	n := vm.Machine.Network
	if n == nil {
		return nil
	}
	r := &state.Network{Pool: n.Pool.String(), DB: vm.NetworkDB, RunID: n.RunID, Machine: n.Slot}
	if vm.net.allocated() {
		r.TAP, r.Host, r.Guest = vm.net.slot.TAP, vm.net.slot.Host.String(), vm.net.slot.Guest.String()
	}
	return r
}

// LeasedFile exists in a VM's directory once the embedded DHCP server has acknowledged the
// guest's address: how `up` tells "no lease yet" from "no SSH yet".
const LeasedFile = "dhcp.leased"

func (vm *VM) markLeased() {
	if f, err := os.OpenFile(vm.path(LeasedFile), os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		f.Close()
	}
}
