package jail

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The devices inside a VM's network namespace. Every VM has the same names: Firecracker
// 1.6 snapshots restore the TAP by name and have no network_overrides.
const (
	// TAP is the interface Firecracker attaches (host_dev_name).
	TAP = "tap0"
	// netnsBridge joins TAP and the veth's inner end.
	netnsBridge = "br0"
	// netnsVeth is the veth's inner end.
	netnsVeth = "veth0"
)

// NetNSDir is where named network namespaces are bind-mounted (as `ip netns` does).
const NetNSDir = "/run/netns"

// NetNSName is the namespace of VM id: "fg-<id>".
func NetNSName(id string) string { return "fg-" + id }

// NetNSPath is the path the jailer joins (--netns) for VM id.
func NetNSPath(id string) string { return filepath.Join(NetNSDir, NetNSName(id)) }

// NetNS is one VM's network namespace: TAP bridged to the inner end of a veth whose outer
// end, in the namespace of the caller, is HostIf. HostIf is L2-transparent to the guest:
// give it the address, DHCP server and firewall rules a host TAP of that name would have.
type NetNS struct {
	Name   string // "fg-<id>"
	Path   string // NetNSDir/Name
	HostIf string
}

// CreateNetNS makes the namespace name with TAP (persistent, owned by root until
// SetTAPOwner gives it to a jail), the bridge and the veth, all up, and hostIf (the outer
// end) in the calling thread's namespace, up, without addresses. On error nothing is left.
func CreateNetNS(name, hostIf string) (n *NetNS, err error) {
	if len(hostIf) == 0 || len(hostIf) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("netns %s: host interface %q: want 1 to %d bytes", name, hostIf, unix.IFNAMSIZ-1)
	}
	n = &NetNS{Name: name, Path: filepath.Join(NetNSDir, name), HostIf: hostIf}
	err = onThread(func(orig netns.NsHandle) error {
		inner, err := netns.NewNamed(name) // the thread is now inside it
		if err != nil {
			return fmt.Errorf("netns %s: %w", name, err)
		}
		defer inner.Close()
		// The TAP is made by an ioctl, in the thread's namespace: make it now.
		if err := netlink.LinkAdd(&netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: TAP},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE,
		}); err != nil {
			return fmt.Errorf("netns %s: %s: %w", name, TAP, err)
		}
		if err := netns.Set(orig); err != nil {
			return fmt.Errorf("netns %s: back to the caller's namespace: %w", name, err)
		}
		in, err := netlink.NewHandleAt(inner)
		if err != nil {
			return fmt.Errorf("netns %s: %w", name, err)
		}
		defer in.Close()
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf}, PeerName: netnsVeth, PeerNamespace: netlink.NsFd(inner)}); err != nil {
			return fmt.Errorf("netns %s: veth %s: %w", name, hostIf, err)
		}
		if err := in.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: netnsBridge}}); err != nil {
			return fmt.Errorf("netns %s: %s: %w", name, netnsBridge, err)
		}
		br, err := in.LinkByName(netnsBridge)
		if err != nil {
			return err
		}
		for _, ifname := range []string{TAP, netnsVeth} {
			l, err := in.LinkByName(ifname)
			if err != nil {
				return fmt.Errorf("netns %s: %s: %w", name, ifname, err)
			}
			if err := in.LinkSetMaster(l, br); err != nil {
				return fmt.Errorf("netns %s: %s into %s: %w", name, ifname, netnsBridge, err)
			}
		}
		for _, ifname := range []string{"lo", TAP, netnsVeth, netnsBridge} {
			l, err := in.LinkByName(ifname)
			if err == nil {
				err = in.LinkSetUp(l)
			}
			if err != nil {
				return fmt.Errorf("netns %s: %s up: %w", name, ifname, err)
			}
		}
		host, err := netlink.LinkByName(hostIf)
		if err == nil {
			err = netlink.LinkSetUp(host)
		}
		if err != nil {
			return fmt.Errorf("netns %s: %s up: %w", name, hostIf, err)
		}
		return nil
	})
	if err != nil {
		n.Remove()
		return nil, err
	}
	return n, nil
}

// Remove deletes the veth (from the caller's namespace; its inner end goes with it) and
// the namespace, TAP and bridge with it. Safe to repeat.
func (n *NetNS) Remove() error {
	var errs []error
	if l, err := netlink.LinkByName(n.HostIf); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("netns %s: delete %s: %w", n.Name, n.HostIf, err))
		}
	}
	if err := netns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("netns %s: %w", n.Name, err))
	}
	return errors.Join(errs...)
}

// SetTAPOwner gives the TAP tap of the namespace at nsPath to owner: only that uid (and
// gid) can attach to it afterwards, apart from root. Firecracker, jailed as owner and
// joined to the namespace, attaches with TUNSETIFF; nobody else can.
func SetTAPOwner(nsPath, tap string, owner Owner) error {
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("netns %s: %w", nsPath, err)
	}
	defer h.Close()
	return onThread(func(orig netns.NsHandle) error {
		if err := netns.Set(h); err != nil {
			return fmt.Errorf("netns %s: %w", nsPath, err)
		}
		err := setTAPOwner(tap, owner)
		if serr := netns.Set(orig); err == nil && serr != nil {
			err = serr
		}
		return err
	})
}

// ReturnTAP gives the TAP tap of the namespace at nsPath back to root (as netlink makes
// TAPs; the kernel knows no way back to "no owner"): a TAP the jail did not make outlives
// the jail (a pod's), and must not stay attachable by a uid that will be handed to another
// jail. A namespace or TAP already gone is not an error.
func ReturnTAP(nsPath, tap string) error {
	if err := SetTAPOwner(nsPath, tap, Owner{}); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func setTAPOwner(tap string, owner Owner) error {
	// TUNSETIFF as root makes a TAP that does not exist: look first, so that a missing
	// one is an error and nothing is added to a namespace that is not ours.
	l, err := netlink.LinkByName(tap)
	if missing := (netlink.LinkNotFoundError{}); errors.As(err, &missing) {
		return fmt.Errorf("tap %s: %w", tap, os.ErrNotExist)
	}
	if err != nil {
		return fmt.Errorf("tap %s: %w", tap, err)
	}
	if l.Type() != "tuntap" {
		return fmt.Errorf("tap %s: a %s, not a TAP", tap, l.Type())
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tap %s: %w", tap, err)
	}
	defer unix.Close(fd)
	var req [unix.IFNAMSIZ + 64]byte
	copy(req[:unix.IFNAMSIZ-1], tap)
	*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	for _, c := range []struct {
		req uintptr
		arg uintptr
	}{
		{unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))},
		{unix.TUNSETOWNER, uintptr(owner.UID)},
		{unix.TUNSETGROUP, uintptr(owner.GID)},
	} {
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), c.req, c.arg); e != 0 {
			return fmt.Errorf("tap %s: ioctl %#x: %w", tap, c.req, e)
		}
	}
	return nil
}

// onThread runs fn on a locked OS thread that starts in the caller's network namespace
// (the caller's thread's: a caller working in a namespace runs locked to its thread, as
// nstest does), handing fn that namespace. If fn leaves the thread elsewhere, the thread
// is never unlocked and dies with its goroutine, so no other goroutine ever runs in a
// foreign namespace.
func onThread(fn func(orig netns.NsHandle) error) error {
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread's own namespace: it is unlocked only once back in it.
		own, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer own.Close()
		if err := netns.Set(orig); err != nil {
			errc <- err
			return
		}
		err = fn(orig)
		if netns.Set(own) == nil {
			if cur, cerr := netns.Get(); cerr == nil {
				if cur.Equal(own) {
					runtime.UnlockOSThread()
				}
				cur.Close()
			}
		}
		errc <- err
	}()
	return <-errc
}
