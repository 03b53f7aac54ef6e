package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// IFNAMSIZ - 1: the longest interface name the kernel accepts.
const maxIfName = 15

// ValidateIfName applies the kernel's rules for interface names (dev_valid_name).
func ValidateIfName(name string) error {
	switch {
	case name == "":
		return errors.New("interface name: empty")
	case len(name) > maxIfName:
		return fmt.Errorf("interface name %q: %d bytes, at most %d", name, len(name), maxIfName)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q: reserved", name)
	case strings.ContainsAny(name, "/: \t\n\v\f\r\x00"):
		return fmt.Errorf("interface name %q: contains '/', ':', NUL or whitespace", name)
	}
	return nil
}

// TAPOption adjusts CreateTAP.
type TAPOption func(*netlink.Tuntap)

// WithOwner lets uid/gid open the TAP (a jailed VMM that is not root). Without it only root
// or CAP_NET_ADMIN can attach.
func WithOwner(uid, gid uint32) TAPOption {
	return func(t *netlink.Tuntap) { t.Owner, t.Group = uid, gid }
}

// CreateTAP creates a persistent TAP device (one queue, no packet info, vnet header) named
// name, gives it exactly the address host (e.g. 172.16.0.1/30), sets mtu (0: kernel
// default) and brings it up, in the current network namespace. A TAP of that name that
// already exists is reconfigured instead, so a retry after a crash converges; any other
// kind of interface of that name is an error. On failure a TAP this call created is
// removed again. log (nil: discard) gets the TAP's progress at Debug.
func CreateTAP(log *slog.Logger, name string, host netip.Prefix, mtu int, opts ...TAPOption) (err error) {
	log = orDiscard(log)
	if err := ValidateIfName(name); err != nil {
		return err
	}
	if !host.IsValid() || !host.Addr().Is4() {
		return fmt.Errorf("tap %s: host address %q: not an IPv4 prefix", name, host.String())
	}
	if host.Bits() < 31 && (host.Addr() == host.Masked().Addr() || host.Addr() == lastAddr(host)) {
		return fmt.Errorf("tap %s: host address %s: is the network or broadcast address", name, host)
	}
	if mtu != 0 && (mtu < 68 || mtu > 65535) {
		return fmt.Errorf("tap %s: mtu %d: want 68 to 65535 (or 0 for the default)", name, mtu)
	}

	link, err := netlink.LinkByName(name)
	created := false
	switch {
	case err == nil:
		if t, ok := link.(*netlink.Tuntap); !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
			return fmt.Errorf("tap %s: an interface of that name exists and is not a TAP (type %s)", name, link.Type())
		}
		log.Debug("network: reusing existing TAP", "tap", name)
	case isNotFound(err):
		t := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: name},
			Mode:      netlink.TUNTAP_MODE_TAP,
			// What Firecracker and QEMU ask for when they attach; one queue, because a
			// persistent TAP's multi-queue flag must match the attaching VMM's.
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		}
		for _, o := range opts {
			o(t)
		}
		if err := netlink.LinkAdd(t); err != nil {
			return fmt.Errorf("tap %s: create: %w", name, err)
		}
		created = true
		defer func() {
			if err != nil {
				if derr := DeleteTAP(log, name); derr != nil {
					log.Warn("network: removing half-made TAP failed", "tap", name, "error", derr)
				}
			}
		}()
		if link, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("tap %s: after create: %w", name, err)
		}
	default:
		return fmt.Errorf("tap %s: look up: %w", name, err)
	}

	if mtu != 0 {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("tap %s: mtu %d: %w", name, mtu, err)
		}
	}
	// Exactly one IPv4 address: a reused TAP may carry a stale one from an earlier slot.
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("tap %s: list addresses: %w", name, err)
	}
	want := &netlink.Addr{IPNet: &net.IPNet{IP: host.Addr().AsSlice(), Mask: net.CIDRMask(host.Bits(), 32)}}
	for _, a := range addrs {
		if a.IPNet != nil && a.IPNet.String() != want.IPNet.String() {
			if err := netlink.AddrDel(link, &a); err != nil {
				return fmt.Errorf("tap %s: remove stale address %s: %w", name, a.IPNet, err)
			}
		}
	}
	if err := netlink.AddrReplace(link, want); err != nil {
		return fmt.Errorf("tap %s: address %s: %w", name, host, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("tap %s: up: %w", name, err)
	}
	log.Debug("network: TAP ready", "tap", name, "address", host, "mtu", mtu, "created", created)
	return nil
}

// DeleteTAP removes the TAP name from the current network namespace. A missing TAP is not
// an error (cleanup may run twice); an interface of that name that is not a TAP is left
// alone and reported. log: nil discards.
func DeleteTAP(log *slog.Logger, name string) error {
	log = orDiscard(log)
	if err := ValidateIfName(name); err != nil {
		return err
	}
	link, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tap %s: look up: %w", name, err)
	}
	if t, ok := link.(*netlink.Tuntap); !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
		return fmt.Errorf("tap %s: refusing to delete: not a TAP (type %s)", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("tap %s: delete: %w", name, err)
	}
	log.Debug("network: TAP deleted", "tap", name)
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	hostBits := 32 - p.Bits()
	for i := 3; i >= 0 && hostBits > 0; i-- {
		n := min(hostBits, 8)
		a[i] |= byte(1<<n - 1)
		hostBits -= n
	}
	return netip.AddrFrom4(a)
}

// HostAddrsInUse snapshots the IPv4 addresses now configured in the current network
// namespace and returns a predicate for Allocate: does a candidate subnet overlap any of
// them (with its prefix)? If the addresses cannot be read it logs and reports nothing in
// use; CreateTAP would then still succeed, and the conflict shows as a routing problem.
// Each overlap it reports is logged at Debug (log: nil discards).
func HostAddrsInUse(log *slog.Logger) func(netip.Prefix) bool {
	log = orDiscard(log)
	prefixes, err := HostPrefixes()
	if err != nil {
		log.Warn("network: cannot read host addresses; not avoiding them", "error", err)
	}
	return func(p netip.Prefix) bool {
		for _, h := range prefixes {
			if h.Overlaps(p) {
				log.Debug("network: slot overlaps a host address, skipping", "subnet", p, "host_address", h)
				return true
			}
		}
		return false
	}
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

// HostPrefixes lists the IPv4 addresses (with prefix length) of every interface in the
// current network namespace.
func HostPrefixes() ([]netip.Prefix, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IPNet.IP.To4())
		if !ok {
			continue
		}
		bits, _ := a.IPNet.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, bits))
	}
	return out, nil
}
