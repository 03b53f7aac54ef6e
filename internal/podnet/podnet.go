// Package podnet gives a VM a Kubernetes pod's network the way Kata Containers does: a TAP
// inside the pod's network namespace, and tc redirects that pass every frame between the
// pod's CNI interface and the TAP, so the guest owns the pod's MAC and IP (configured
// statically from what the CNI plugin set up) and the pod's namespace is only a wire.
package podnet

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/spec"
)

// PodInterface is the interface CNI plugins make in a pod's namespace.
const PodInterface = "eth0"

// TAP is the name of the VM's TAP in the pod's namespace.
const TAP = "fgtap0"

// InNetNS says whether the calling thread's network namespace (the shim's, all its threads
// share it) is the one bound at path.
func InNetNS(path string) (bool, error) {
	var mine, theirs unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &mine); err != nil {
		return false, err
	}
	if err := unix.Stat(path, &theirs); err != nil {
		return false, fmt.Errorf("network namespace %s: %w", path, err)
	}
	return mine.Dev == theirs.Dev && mine.Ino == theirs.Ino, nil
}

// StartIn starts cmd inside the network namespace bound at path: it is forked from an OS
// thread moved there, which is never used again (it ends with its goroutine).
func StartIn(path string, cmd *exec.Cmd) error {
	done := make(chan error, 1)
	go func() {
		// Not unlocked: the thread leaves the process with this goroutine, its namespace
		// with it.
		runtime.LockOSThread()
		if err := Enter(path); err != nil {
			done <- err
			return
		}
		done <- cmd.Start()
	}()
	return <-done
}

// Enter moves the calling OS thread (which must be locked to its goroutine) into the network
// namespace bound at path.
func Enter(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	return nil
}

// Attach makes tap in this network namespace and wires it to ifName with tc redirects both
// ways, and returns the NIC the guest must configure: ifName's MAC, IPv4 address and MTU,
// the namespace's default gateway, and dns. Undone by Detach.
func Attach(log *slog.Logger, ifName, tap string, dns []netip.Addr) (_ *spec.AttachedNIC, err error) {
	pod, err := netlink.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("pod interface %s: %w", ifName, err)
	}
	addrs, err := netlink.AddrList(pod, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		return nil, fmt.Errorf("pod interface %s: no IPv4 address (%v)", ifName, err)
	}
	ip, ok := netip.AddrFromSlice(addrs[0].IP.To4())
	if !ok {
		return nil, fmt.Errorf("pod interface %s: address %s", ifName, addrs[0].IP)
	}
	ones, _ := addrs[0].Mask.Size()
	nic := &spec.AttachedNIC{
		TAP: tap, MAC: pod.Attrs().HardwareAddr.String(), Address: netip.PrefixFrom(ip, ones),
		MTU: pod.Attrs().MTU, DNS: dns,
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil {
			nic.Gateway, _ = netip.AddrFromSlice(r.Gw.To4())
			break
		}
	}
	t := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: tap},
		Mode:      netlink.TUNTAP_MODE_TAP,
		// What QEMU and Firecracker ask for when they attach: one queue, no packet info.
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
	}
	if err := netlink.LinkAdd(t); err != nil {
		return nil, fmt.Errorf("tap %s: %w", tap, err)
	}
	defer func() {
		if err != nil {
			Detach(log, ifName, tap)
		}
	}()
	tapLink, err := netlink.LinkByName(tap)
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", tap, err)
	}
	// A TAP is created with the default MTU whatever LinkAttrs say.
	if err := netlink.LinkSetMTU(tapLink, pod.Attrs().MTU); err != nil {
		return nil, fmt.Errorf("tap %s: mtu: %w", tap, err)
	}
	if err := netlink.LinkSetUp(tapLink); err != nil {
		return nil, fmt.Errorf("tap %s: up: %w", tap, err)
	}
	for _, pair := range [][2]netlink.Link{{pod, tapLink}, {tapLink, pod}} {
		if err := redirect(pair[0], pair[1]); err != nil {
			return nil, err
		}
	}
	log.Info("pod network attached", "interface", ifName, "tap", tap, "address", nic.Address, "gateway", nic.Gateway)
	return nic, nil
}

// redirect sends every frame arriving on from out of to: an ingress qdisc on from, with a
// match-all u32 filter whose action is a mirred egress redirect.
func redirect(from, to netlink.Link) error {
	qdisc := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: from.Attrs().Index, Parent: netlink.HANDLE_INGRESS,
		Handle: netlink.MakeHandle(0xffff, 0)}}
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("ingress qdisc on %s: %w", from.Attrs().Name, err)
	}
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: from.Attrs().Index, Parent: netlink.MakeHandle(0xffff, 0),
			Protocol: unix.ETH_P_ALL, Priority: 1},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR, Ifindex: to.Attrs().Index,
		}},
	}
	if err := netlink.FilterAdd(filter); err != nil {
		return fmt.Errorf("redirect %s -> %s: %w", from.Attrs().Name, to.Attrs().Name, err)
	}
	return nil
}

// Detach removes what Attach made: the TAP (its qdisc goes with it) and ifName's ingress
// qdisc (its filter with it). What is already gone is not an error.
func Detach(log *slog.Logger, ifName, tap string) error {
	var errs []error
	if l, err := netlink.LinkByName(tap); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("tap %s: delete: %w", tap, err))
		}
	}
	if l, err := netlink.LinkByName(ifName); err == nil {
		qdisc := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_INGRESS,
			Handle: netlink.MakeHandle(0xffff, 0)}}
		if err := netlink.QdiscDel(qdisc); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("ingress qdisc on %s: %w", ifName, err))
		}
	}
	err := errors.Join(errs...)
	if err == nil {
		log.Debug("pod network detached", "interface", ifName, "tap", tap)
	}
	return err
}

// Nameservers reads the nameserver lines of a resolv.conf (none when it cannot be read).
func Nameservers(path string) []netip.Addr {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil && a.Is4() {
				out = append(out, a)
			}
		}
	}
	return out
}
