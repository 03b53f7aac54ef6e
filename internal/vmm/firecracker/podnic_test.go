package firecracker

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/testutil/nstest"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

func TestNICNetNS(t *testing.T) {
	const own, pod, other = "/run/netns/fg-vm", "/run/netns/cni-1", "/run/netns/cni-2"
	for _, tc := range []struct {
		name    string
		nics    []vmm.NIC
		own     string
		path    string
		foreign bool
		err     string
	}{
		{name: "no NIC", own: own, path: own},
		{name: "no NIC, no namespace", path: ""},
		{name: "the VM's own", nics: []vmm.NIC{{TAP: "tap0"}}, own: own, path: own},
		{name: "a pod's", nics: []vmm.NIC{{TAP: "fgtap0", NetNS: pod}}, path: pod, foreign: true},
		{name: "two in the pod's", nics: []vmm.NIC{{TAP: "a", NetNS: pod}, {TAP: "b", NetNS: pod}}, path: pod, foreign: true},
		{name: "none at all", nics: []vmm.NIC{{TAP: "tap0"}}, err: "has none"},
		{name: "two pods", nics: []vmm.NIC{{TAP: "a", NetNS: pod}, {TAP: "b", NetNS: other}}, err: "joins one"},
		{name: "a pod's and its own", nics: []vmm.NIC{{TAP: "a", NetNS: pod}}, own: own, err: "joins one"},
		{name: "a pod's and one without", nics: []vmm.NIC{{TAP: "a", NetNS: pod}, {TAP: "b"}}, err: "has none"},
	} {
		path, foreign, err := nicNetNS(tc.nics, tc.own)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %q %v %v, want an error saying %q", tc.name, path, foreign, err, tc.err)
		case tc.err == "" && (err != nil || path != tc.path || foreign != tc.foreign):
			t.Errorf("%s: %q %v %v, want %q %v", tc.name, path, foreign, err, tc.path, tc.foreign)
		}
	}
}

// TestJailedPodNIC: a NIC whose TAP is in someone else's namespace (a pod's, named by
// NIC.NetNS). The jailer joins that namespace, Firecracker attaches the TAP as the jail's
// uid, and its guest's frames come out of it; when the VM ends, the TAP and the namespace
// are still there, the TAP given back to root, and the jail is gone.
func TestJailedPodNIC(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) {
		b, jr := jailedBackend(t, rel, "")
		jr.NetNS = func(string) string { return "" } // no namespace of its own
		pod := nstest.New(t, "fcpod")
		spec := testSpec(t, "")
		spec.ID = "vm-" + strconv.Itoa(rand.IntN(1e6))
		const tap, mac = "fgtap0", "0a:58:0a:63:00:05"
		spec.NICs = []vmm.NIC{{TAP: tap, MAC: mac, NetNS: pod.Path()}}
		var sock int
		pod.Run(t, func() error {
			// As podnet.Attach makes it: persistent, owned by root (netlink sets 0:0), up.
			if err := netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tap}, Mode: netlink.TUNTAP_MODE_TAP,
				Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}); err != nil {
				return err
			}
			l, err := netlink.LinkByName(tap)
			if err == nil {
				err = netlink.LinkSetUp(l)
			}
			if err != nil {
				return err
			}
			sock, err = nstest.PacketSocket(tap)
			return err
		})
		defer syscall.Close(sock)
		if got := tapOwner(t, pod, tap); got != "0" {
			t.Fatalf("the pod's TAP has owner %s before the VM, want root (0)", got)
		}
		inst, err := b.Start(startCtx(t), spec)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { inst.Kill(); inst.Wait() }()
		if src, dport, err := nstest.ReadUDPFrame(sock, 10*time.Second); err != nil || src != mac || dport != 67 {
			console, _ := os.ReadFile(spec.ConsoleLog)
			t.Fatalf("on %s: a frame from %s to port %d (%v), want the guest's DHCPDISCOVER from %s\nconsole:\n%s", tap, src, dport, err, mac, console)
		}
		al, ok, err := jr.Owners.Lookup(spec.ID)
		if err != nil || !ok {
			t.Fatalf("the jail's owner: %v %v", ok, err)
		}
		if got := tapOwner(t, pod, tap); got != strconv.Itoa(al.Owner.UID) {
			t.Errorf("the pod's TAP has owner %s while the VM runs, want the jail's uid %d", got, al.Owner.UID)
		}
		// Firecracker (and its fake guest) run as the jail's uid, in the pod's namespace.
		pids, err := jail.Processes("/proc", al.Owner)
		if err != nil || len(pids) == 0 {
			t.Fatalf("processes of the jail's uid %d: %v %v", al.Owner.UID, pids, err)
		}
		for _, pid := range pids {
			if !sameFile(t, "/proc/"+strconv.Itoa(pid)+"/ns/net", pod.Path()) {
				t.Errorf("jailed process %d is not in the pod's network namespace", pid)
			}
		}
		inst.Kill()
		inst.Wait()

		if got := tapOwner(t, pod, tap); got != "0" {
			t.Errorf("the pod's TAP has owner %s after the VM, want root (0)", got)
		}
		if _, err := os.Stat(pod.Path()); err != nil {
			t.Errorf("the pod's namespace: %v", err)
		}
		if ids, err := jr.Jails(); err != nil || len(ids) > 0 {
			t.Errorf("jails left: %v %v", ids, err)
		}
		if pids, _ := jail.Processes("/proc", al.Owner); len(pids) > 0 {
			t.Errorf("processes of the jail's uid left: %v", pids)
		}
	})
}

// tapOwner is the owner uid the kernel reports for tap in ns ("-1": none).
func tapOwner(t *testing.T, ns *nstest.NS, tap string) string {
	t.Helper()
	// `ip netns exec` mounts the namespace's own sysfs.
	return strings.TrimSpace(ns.MustExec(t, "cat", "/sys/class/net/"+tap+"/owner"))
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(fa, fb)
}
