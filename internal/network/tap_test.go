package network

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/testutil/nstest"
)

func TestTAPValidation(t *testing.T) {
	host := netip.MustParsePrefix("172.16.0.1/30")
	cases := []struct {
		name string
		host netip.Prefix
		mtu  int
		want string
	}{
		{"tap0123456789abc", host, 0, `"tap0123456789abc"`},
		{"tap/x", host, 0, `"tap/x"`},
		{"", host, 0, "empty"},
		{"tapx", netip.MustParsePrefix("fd00::1/64"), 0, "fd00::1/64"},
		{"tapx", netip.MustParsePrefix("172.16.0.0/30"), 0, "172.16.0.0/30"},
		{"tapx", netip.MustParsePrefix("172.16.0.3/30"), 0, "172.16.0.3/30"},
		{"tapx", host, 40, "mtu 40"},
	}
	// In a namespace of its own: should validation ever let one through, nothing reaches
	// the host.
	ns := nstest.New(t, "tapval")
	ns.Run(t, func() error {
		for _, c := range cases {
			err := CreateTAP(nil, c.name, c.host, c.mtu)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("CreateTAP(%q, %s, %d) = %v; want an error naming %s", c.name, c.host, c.mtu, err, c.want)
			}
		}
		return nil
	})
}

func TestCreateDeleteTAP(t *testing.T) {
	ns := nstest.New(t, "tap")
	slot := PreferredSlot(DefaultPool, "abc", "m1")
	name := slot.TAP
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ns.Run(t, func() error {
		if err := CreateTAP(log, name, slot.HostPrefix(), 1400, WithOwner(1000, 1000)); err != nil {
			return err
		}
		if err := checkTAP(name, slot.HostPrefix(), 1400); err != nil {
			return err
		}
		l, _ := netlink.LinkByName(name)
		if tt := l.(*netlink.Tuntap); tt.NonPersist || tt.Owner != 1000 || tt.Group != 1000 {
			return fmt.Errorf("tap %s: persist=%v owner=%d group=%d", name, !tt.NonPersist, tt.Owner, tt.Group)
		}
		// Again, with another address: reconfigured, not duplicated.
		other := netip.MustParsePrefix("172.16.9.1/30")
		if err := CreateTAP(nil, name, other, 0); err != nil {
			return fmt.Errorf("second CreateTAP: %w", err)
		}
		if err := checkTAP(name, other, 1400); err != nil {
			return err
		}
		// A VMM can attach the way QEMU/Firecracker do.
		if err := attachTAP(name); err != nil {
			return err
		}
		// Names of other kinds of interface are neither taken over nor deleted.
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "notatap"}, PeerName: "notatap-peer"}); err != nil {
			return err
		}
		if err := CreateTAP(nil, "notatap", other, 0); err == nil || !strings.Contains(err.Error(), "not a TAP") {
			return fmt.Errorf("CreateTAP over a veth: %v", err)
		}
		if err := DeleteTAP(nil, "notatap"); err == nil {
			return errors.New("DeleteTAP deleted a veth")
		}
		if _, err := netlink.LinkByName("notatap"); err != nil {
			return fmt.Errorf("veth gone: %w", err)
		}
		if err := DeleteTAP(log, name); err != nil {
			return err
		}
		if _, err := netlink.LinkByName(name); !isNotFound(err) {
			return fmt.Errorf("tap %s still there after DeleteTAP: %v", name, err)
		}
		return DeleteTAP(nil, name) // twice: fine
	})
	// Nothing leaked into the test process's own namespace.
	if _, err := netlink.LinkByName(name); !isNotFound(err) {
		t.Fatalf("tap %s visible outside the test namespace: %v", name, err)
	}
	// Per-VM progress goes to the injected logger, at Debug.
	for _, want := range []string{`level=DEBUG msg="network: TAP ready" tap=` + name, `level=DEBUG msg="network: TAP deleted" tap=` + name} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logged.String())
		}
	}
}

func checkTAP(name string, host netip.Prefix, mtu int) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	tt, ok := l.(*netlink.Tuntap)
	if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
		return fmt.Errorf("%s: %T, want a TAP", name, l)
	}
	if l.Attrs().MTU != mtu || l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("%s: mtu %d flags %v", name, l.Attrs().MTU, l.Attrs().Flags)
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

// attachTAP opens the TAP as a VMM does (TUNSETIFF, IFF_TAP|IFF_NO_PI|IFF_VNET_HDR).
func attachTAP(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var req [unix.IFNAMSIZ + 64]byte
	copy(req[:], name)
	*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		return fmt.Errorf("attach %s: TUNSETIFF: %w", name, errno)
	}
	return nil
}

func TestHostAddrsInUse(t *testing.T) {
	ns := nstest.New(t, "addrs")
	pool := netip.MustParsePrefix("172.16.5.0/28")
	a := openTestAllocator(t, pool.String())
	ns.Run(t, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		for _, p := range []string{"172.16.5.9/30", "10.9.0.1/16"} {
			addr, _ := netlink.ParseAddr(p)
			if err := netlink.AddrAdd(lo, addr); err != nil {
				return fmt.Errorf("add %s: %w", p, err)
			}
		}
		inUse := HostAddrsInUse(nil)
		for p, want := range map[string]bool{
			"172.16.5.8/30": true, "172.16.5.4/30": false, "10.9.200.0/30": true,
			"127.0.0.0/30": true, "172.16.5.12/30": false,
		} {
			if got := inUse(netip.MustParsePrefix(p)); got != want {
				return fmt.Errorf("inUse(%s) = %v, want %v", p, got, want)
			}
		}
		for i := 0; i < 3; i++ {
			s, err := a.Allocate("r", fmt.Sprintf("m%d", i), inUse)
			if err != nil {
				return err
			}
			if s.Subnet.String() == "172.16.5.8/30" {
				return fmt.Errorf("m%d got %s, which the host uses", i, s.Subnet)
			}
		}
		if _, err := a.Allocate("r", "m3", inUse); !errors.Is(err, ErrPoolExhausted) {
			return fmt.Errorf("fourth allocation with one subnet in use: %v", err)
		}
		return nil
	})
}
