//go:build linux

package guest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// SetUpNetwork brings the VM's interface up (the loopback is up since stage 1: LoopbackUp),
// and gives the VM its names:
// hostname, /etc/hostname, /etc/hosts and /etc/resolv.conf below root. An app VM that asks
// for DHCP gets its lease here (within dhcpTimeout); a system VM's own init runs its DHCP
// client. Errors name the step.
func SetUpNetwork(root string, cfg *vmconfig.Config, dhcpTimeout time.Duration) error {
	n := cfg.Network
	// System mode too: like kernel-testing's initrd, the address is configured before the
	// image's init starts (their images carry no network configuration of their own).
	if n != nil && n.DHCP {
		ctx, cancel := context.WithTimeout(context.Background(), dhcpTimeout)
		leased, err := LeaseByDHCP(ctx, n)
		cancel()
		if err != nil {
			return fmt.Errorf("get an address by DHCP: %w", err)
		}
		n = leased
	}
	if n != nil && !n.DHCP {
		if err := ConfigureInterface(n); err != nil {
			return fmt.Errorf("configure network: %w", err)
		}
		if err := WriteResolvConf(root, n.DNS); err != nil {
			return fmt.Errorf("write /etc/resolv.conf: %w", err)
		}
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
		if err := replaceFile(filepath.Join(root, "etc/hostname"), cfg.Hostname+"\n"); err != nil {
			return fmt.Errorf("write /etc/hostname: %w", err)
		}
	}
	if err := WriteHosts(root, cfg.Hostname, n); err != nil {
		return fmt.Errorf("write /etc/hosts: %w", err)
	}
	return nil
}

// LoopbackUp brings lo up; programs assume localhost works. A plain SIOCSIFFLAGS, not
// netlink: it is on every boot's path, and the netlink client's first request costs tens of
// milliseconds under emulation.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: set up: %w", err)
	}
	return nil
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
// into /run, and writing through it would go nowhere. A new file is also cheaper than a
// truncated one: ext4 writes a file truncated and rewritten back at once (auto_da_alloc),
// a synchronous disk write on the boot's path.
func replaceFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	os.Remove(path)
	return os.WriteFile(path, []byte(content), 0o644)
}
