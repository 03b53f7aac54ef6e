package dhcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"

	"github.com/firegopher/firegopher/internal/testutil/nstest"
)

// link is a "host" namespace whose TAP stand-in (a veth end named like a TAP, with the
// host address) faces a "guest" namespace's eth0.
type link struct {
	host, guest *nstest.NS
	tap         string
}

func newLink(t *testing.T, host *nstest.NS, tap, hostCIDR string) link {
	t.Helper()
	guest := nstest.New(t, "dhcpg")
	nstest.Veth(t, host, tap, guest, "eth0")
	host.Run(t, func() error {
		l, err := netlink.LinkByName(tap)
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(hostCIDR)
		return netlink.AddrAdd(l, a)
	})
	return link{host: host, guest: guest, tap: tap}
}

// request runs a real DHCP exchange (DISCOVER, OFFER, REQUEST, ACK) from the guest side.
func request(ns *nstest.NS, mods ...dhcpv4.Modifier) (*nclient4.Lease, error) {
	var lease *nclient4.Lease
	err := ns.Do(func() error {
		// Retries bound a lost packet; the exchange itself is driven by replies.
		c, err := nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		lease, err = c.Request(ctx, mods...)
		return err
	})
	return lease, err
}

func checkAck(t *testing.T, ack *dhcpv4.DHCPv4, guest, host string, dns []string, d time.Duration) {
	t.Helper()
	if ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("got %s, want ACK", ack.MessageType())
	}
	if got := ack.YourIPAddr.String(); got != guest {
		t.Errorf("address %s, want %s", got, guest)
	}
	if ones, bits := ack.SubnetMask().Size(); ones != 30 || bits != 32 {
		t.Errorf("mask %s, want /30", ack.SubnetMask())
	}
	if r := ack.Router(); len(r) != 1 || r[0].String() != host {
		t.Errorf("router %v, want %s", r, host)
	}
	if s := ack.ServerIdentifier(); s.String() != host {
		t.Errorf("server id %s, want %s", s, host)
	}
	var got []string
	for _, d := range ack.DNS() {
		got = append(got, d.String())
	}
	if !slices.Equal(got, dns) {
		t.Errorf("DNS %v, want %v", got, dns)
	}
	if lt := ack.IPAddressLeaseTime(0); lt != d {
		t.Errorf("lease time %s, want %s", lt, d)
	}
}

func TestServeDHCP(t *testing.T) {
	nstest.RequireRoot(t)
	host := nstest.New(t, "dhcph")
	// Two TAPs in one namespace, one responder each: binding to the device keeps them apart.
	a := newLink(t, host, "tapdhcpa", "172.16.0.1/30")
	b := newLink(t, host, "tapdhcpb", "172.16.0.5/30")
	host.MustExec(t, "ip", "addr", "add", "10.53.0.53/32", "dev", "lo") // a second DNS address, inside the test
	var guestMAC net.HardwareAddr
	a.guest.Run(t, func() error {
		l, err := netlink.LinkByName("eth0")
		guestMAC = l.Attrs().HardwareAddr
		return err
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stopA, stopB func() error
	host.Run(t, func() error {
		var err error
		stopA, err = ServeDHCP(ctx, nil, a.tap, Lease{
			Guest: netip.MustParseAddr("172.16.0.2"), Host: netip.MustParseAddr("172.16.0.1"),
			DNS:      []netip.Addr{netip.MustParseAddr("172.16.0.1"), netip.MustParseAddr("10.53.0.53")},
			Duration: 10 * time.Minute, Hostname: "vm-a", MTU: 1400, MAC: guestMAC,
		})
		if err != nil {
			return err
		}
		stopB, err = ServeDHCP(ctx, nil, b.tap, Lease{
			Guest: netip.MustParseAddr("172.16.0.6"), Host: netip.MustParseAddr("172.16.0.5"),
			DNS: []netip.Addr{netip.MustParseAddr("172.16.0.5")},
		})
		return err
	})
	t.Cleanup(func() { stopA(); stopB() })

	la, err := request(a.guest)
	if err != nil {
		t.Fatalf("guest a: %v", err)
	}
	checkAck(t, la.ACK, "172.16.0.2", "172.16.0.1", []string{"172.16.0.1", "10.53.0.53"}, 10*time.Minute)
	if la.ACK.HostName() != "vm-a" {
		t.Errorf("hostname %q", la.ACK.HostName())
	}
	if mtu := la.ACK.GetOneOption(dhcpv4.OptionInterfaceMTU); len(mtu) != 2 || int(mtu[0])<<8|int(mtu[1]) != 1400 {
		t.Errorf("mtu option %v", mtu)
	}
	if la.Offer.YourIPAddr.String() != "172.16.0.2" {
		t.Errorf("offer %s", la.Offer.YourIPAddr)
	}

	lb, err := request(b.guest)
	if err != nil {
		t.Fatalf("guest b: %v", err)
	}
	checkAck(t, lb.ACK, "172.16.0.6", "172.16.0.5", []string{"172.16.0.5"}, DefaultLeaseTime)

	// Asking for another address gets a NAK.
	_, err = request(b.guest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("172.16.0.7"))))
	var nak *nclient4.ErrNak
	if !errors.As(err, &nak) {
		t.Fatalf("request for 172.16.0.7: %v, want a NAK", err)
	}

	// stop frees the socket: a new responder can bind the same TAP at once.
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	if err := stopB(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	var stopB2 func() error
	host.Run(t, func() error {
		var err error
		stopB2, err = ServeDHCP(ctx2, nil, b.tap, Lease{Guest: netip.MustParseAddr("172.16.0.6"), Host: netip.MustParseAddr("172.16.0.5"), DNS: []netip.Addr{netip.MustParseAddr("172.16.0.5")}})
		return err
	})
	if _, err := request(b.guest); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	cancel2() // the context also stops it
	if err := stopB2(); err != nil {
		t.Fatal(err)
	}
}

func TestServeDHCPRejects(t *testing.T) {
	g, h := netip.MustParseAddr("172.16.0.2"), netip.MustParseAddr("172.16.0.1")
	cases := []struct {
		tap   string
		lease Lease
		want  string
	}{
		{"tap-name-too-long", Lease{Guest: g, Host: h}, "tap-name-too-long"},
		{"tapx", Lease{Guest: netip.MustParseAddr("fd00::2"), Host: h}, "guest \"fd00::2\""},
		{"tapx", Lease{Guest: g, Host: netip.MustParseAddr("172.16.0.9")}, "host 172.16.0.9"},
		{"tapx", Lease{Guest: netip.MustParseAddr("172.16.0.3"), Host: h}, "172.16.0.3 is the network or broadcast"},
		{"tapx", Lease{Guest: g, Host: h, DNS: []netip.Addr{netip.MustParseAddr("::1")}}, "dns server \"::1\""},
		{"tapx", Lease{Guest: g, Host: h, Hostname: "bad_name"}, "hostname \"bad_name\""},
		{"tapx", Lease{Guest: g, Host: h, Duration: time.Second}, "duration 1s"},
		{"tapx", Lease{Guest: g, Host: h, MTU: 10}, "mtu 10"},
		{"no-such-if", Lease{Guest: g, Host: h}, "no-such-if"},
	}
	ns := nstest.New(t, "dhcpval") // should one be accepted, it listens there, not on the host
	ns.Run(t, func() error {
		for _, c := range cases {
			stop, err := ServeDHCP(context.Background(), nil, c.tap, c.lease)
			if err == nil {
				stop()
				t.Errorf("ServeDHCP(%s, %+v) = nil", c.tap, c.lease)
				continue
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("ServeDHCP(%s, %+v) = %v; want it to name %s", c.tap, c.lease, err, c.want)
			}
		}
		return nil
	})
}
