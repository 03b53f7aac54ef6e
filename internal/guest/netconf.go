//go:build linux

package guest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// LoopbackUp brings lo up; programs assume localhost works.
func LoopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	return netlink.LinkSetUp(lo)
}

// ConfigureInterface sets up the interface with n.MAC: MTU, address, up, default route.
func ConfigureInterface(n *vmconfig.Network) error {
	link, err := linkByMAC(n.MAC)
	if err != nil {
		return err
	}
	if n.MTU != 0 {
		if err := netlink.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("network: mtu %d: %w", n.MTU, err)
		}
	}
	addr, err := netlink.ParseAddr(n.Address)
	if err != nil {
		return err
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("network: address %s: %w", n.Address, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("network: up: %w", err)
	}
	if n.Gateway != "" {
		gw := net.ParseIP(n.Gateway)
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
			return fmt.Errorf("network: default route via %s: %w", n.Gateway, err)
		}
	}
	return nil
}

// WriteHosts writes /etc/hosts (below root) naming the VM.
func WriteHosts(root, hostname string, n *vmconfig.Network) error {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if n != nil {
		if p, err := netip.ParsePrefix(n.Address); err == nil {
			fmt.Fprintf(&b, "%s\t%s\n", p.Addr(), hostname)
		}
	} else if hostname != "" {
		fmt.Fprintf(&b, "127.0.1.1\t%s\n", hostname)
	}
	return replaceFile(filepath.Join(root, "etc/hosts"), b.String())
}

// WriteResolvConf writes /etc/resolv.conf (below root) when the VM has DNS servers.
func WriteResolvConf(root string, dns []string) error {
	if len(dns) == 0 {
		return nil
	}
	var b strings.Builder
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return replaceFile(filepath.Join(root, "etc/resolv.conf"), b.String())
}

// replaceFile swaps in a new regular file: images often ship /etc/resolv.conf as a symlink
// into /run, and writing through it would go nowhere.
func replaceFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	os.Remove(path)
	return os.WriteFile(path, []byte(content), 0o644)
}
