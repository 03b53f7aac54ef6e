//go:build linux

package guest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// LeaseByDHCP brings the interface with mac up, asks the host's DHCP server for a lease,
// and returns it as a static network config (address, router, DNS) to apply.
func LeaseByDHCP(ctx context.Context, n *vmconfig.Network) (*vmconfig.Network, error) {
	link, err := linkByMAC(n.MAC)
	if err != nil {
		return nil, err
	}
	if n.MTU != 0 {
		if err := netlink.LinkSetMTU(link, n.MTU); err != nil {
			return nil, fmt.Errorf("dhcp: mtu %d: %w", n.MTU, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("dhcp: up: %w", err)
	}
	client, err := nclient4.New(link.Attrs().Name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
	if err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	defer client.Close()
	lease, err := client.Request(ctx)
	if err != nil {
		return nil, fmt.Errorf("dhcp on %s: %w", link.Attrs().Name, err)
	}
	ack := lease.ACK
	ones, _ := ack.SubnetMask().Size()
	addr, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ones == 0 {
		return nil, fmt.Errorf("dhcp: lease without address or mask: %s", ack.Summary())
	}
	out := &vmconfig.Network{MAC: n.MAC, MTU: n.MTU, Address: netip.PrefixFrom(addr, ones).String()}
	if routers := ack.Router(); len(routers) > 0 {
		out.Gateway = routers[0].String()
	}
	for _, d := range ack.DNS() {
		out.DNS = append(out.DNS, d.String())
	}
	if len(out.DNS) == 0 {
		out.DNS = n.DNS
	}
	return out, nil
}

func linkByMAC(s string) (netlink.Link, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, err
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Attrs().HardwareAddr.String() == mac.String() {
			return l, nil
		}
	}
	return nil, fmt.Errorf("network: no interface with MAC %s (is virtio_net loaded?)", mac)
}
