package network

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/firegopher/firegopher/internal/testutil/nstest"
)

func TestConfigureLink(t *testing.T) {
	ns := nstest.New(t, "link")
	first := netip.MustParsePrefix("172.16.0.1/30")
	other := netip.MustParsePrefix("172.16.9.1/30")
	ns.Run(t, func() error {
		if err := ConfigureLink(nil, "nosuchlink", first, 0); err == nil || !strings.Contains(err.Error(), "nosuchlink") {
			return fmt.Errorf("missing link: %v", err)
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vhost"}, PeerName: "vpeer"}); err != nil {
			return err
		}
		if err := ConfigureLink(nil, "vhost", first, 1400); err != nil {
			return err
		}
		if err := checkLink("vhost", first, 1400); err != nil {
			return err
		}
		// Again with another address: replaced, not added; mtu 0 leaves it.
		if err := ConfigureLink(nil, "vhost", other, 0); err != nil {
			return err
		}
		if err := checkLink("vhost", other, 1400); err != nil {
			return err
		}
		if err := ConfigureLink(nil, "vhost", other, 40); err == nil || !strings.Contains(err.Error(), "mtu 40") {
			return fmt.Errorf("mtu 40: %v", err)
		}
		return nil
	})
}

// checkLink says whether name is up with exactly the IPv4 address host and mtu.
func checkLink(name string, host netip.Prefix, mtu int) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if l.Attrs().MTU != mtu || l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("%s: mtu %d flags %v, want mtu %d and up", name, l.Attrs().MTU, l.Attrs().Flags, mtu)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != host.String() {
		return fmt.Errorf("%s: addresses %v, want only %s", name, addrs, host)
	}
	return nil
}
