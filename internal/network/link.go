package network

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// ConfigureLink gives the existing interface name (of any kind: the host end of a jailed
// VM's veth takes the TAP's place) exactly the address host, sets mtu (0: leave it) and
// brings it up, in the current network namespace, as CreateTAP does for a TAP. Repeating
// it converges. log (nil: discard) gets its progress at Debug.
func ConfigureLink(log *slog.Logger, name string, host netip.Prefix, mtu int) error {
	log = orDiscard(log)
	if err := ValidateIfName(name); err != nil {
		return err
	}
	if !host.IsValid() || !host.Addr().Is4() {
		return fmt.Errorf("link %s: host address %q: not an IPv4 prefix", name, host.String())
	}
	if mtu != 0 && (mtu < 68 || mtu > 65535) {
		return fmt.Errorf("link %s: mtu %d: want 68 to 65535 (or 0 for the default)", name, mtu)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: look up: %w", name, err)
	}
	if mtu != 0 {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("link %s: mtu %d: %w", name, mtu, err)
		}
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("link %s: list addresses: %w", name, err)
	}
	want := &netlink.Addr{IPNet: &net.IPNet{IP: host.Addr().AsSlice(), Mask: net.CIDRMask(host.Bits(), 32)}}
	for _, a := range addrs {
		if a.IPNet != nil && a.IPNet.String() != want.IPNet.String() {
			if err := netlink.AddrDel(link, &a); err != nil {
				return fmt.Errorf("link %s: remove stale address %s: %w", name, a.IPNet, err)
			}
		}
	}
	if err := netlink.AddrReplace(link, want); err != nil {
		return fmt.Errorf("link %s: address %s: %w", name, host, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("link %s: up: %w", name, err)
	}
	log.Debug("network: link configured", "link", name, "address", host, "mtu", mtu)
	return nil
}
