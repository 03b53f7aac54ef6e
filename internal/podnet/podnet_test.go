package podnet

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
)

// inTestNetNS runs fn on a thread inside a network namespace the test creates (and
// deletes): the host's own namespace is never touched.
func inTestNetNS(t *testing.T, fn func(nsPath string)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	name := fmt.Sprintf("fg-podnet-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	path := filepath.Join("/var/run/netns", name)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := Enter(path); err != nil {
			t.Error(err)
			return
		}
		fn(path)
	}()
	<-done
}

func TestAttachAndDetach(t *testing.T) {
	inTestNetNS(t, func(nsPath string) {
		if in, err := InNetNS(nsPath); err != nil || !in {
			t.Errorf("InNetNS: %v %v", in, err)
			return
		}
		// What a CNI plugin leaves: eth0 with the pod's address, a default route.
		mac, _ := net.ParseMAC("0a:58:0a:63:00:05")
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: PodInterface, MTU: 1450, HardwareAddr: mac}, PeerName: "peer0"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Error(err)
			return
		}
		eth0, _ := netlink.LinkByName(PodInterface)
		peer, _ := netlink.LinkByName("peer0")
		addr, _ := netlink.ParseAddr("10.99.0.5/24")
		netlink.AddrAdd(eth0, addr)
		netlink.LinkSetUp(eth0)
		netlink.LinkSetUp(peer)
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.99.0.1")}); err != nil {
			t.Error(err)
			return
		}
		dns := []netip.Addr{netip.MustParseAddr("10.96.0.10")}
		nic, err := Attach(slog.New(slog.DiscardHandler), PodInterface, TAP, dns)
		if err != nil {
			t.Error(err)
			return
		}
		want := &nicWant{TAP: TAP, MAC: "0a:58:0a:63:00:05", Address: "10.99.0.5/24", Gateway: "10.99.0.1", MTU: 1450}
		if got := (&nicWant{nic.TAP, nic.MAC, nic.Address.String(), nic.Gateway.String(), nic.MTU}); !reflect.DeepEqual(got, want) || !reflect.DeepEqual(nic.DNS, dns) {
			t.Errorf("nic: got %+v, want %+v", got, want)
		}
		tap, err := netlink.LinkByName(TAP)
		if err != nil {
			t.Error(err)
			return
		}
		if tap.Attrs().MTU != 1450 {
			t.Errorf("tap mtu %d", tap.Attrs().MTU)
		}
		// Each side's ingress is redirected to the other.
		for from, to := range map[netlink.Link]netlink.Link{eth0: tap, tap: eth0} {
			if got := redirectTarget(t, from); got != to.Attrs().Index {
				t.Errorf("%s: redirects to ifindex %d, want %d (%s)", from.Attrs().Name, got, to.Attrs().Index, to.Attrs().Name)
			}
		}
		if err := Detach(slog.New(slog.DiscardHandler), PodInterface, TAP); err != nil {
			t.Error(err)
		}
		if _, err := netlink.LinkByName(TAP); err == nil {
			t.Error("the tap outlived Detach")
		}
		if got := redirectTarget(t, eth0); got != 0 {
			t.Errorf("eth0 still redirects to %d", got)
		}
		// Attach again (the pod's next container).
		if _, err := Attach(slog.New(slog.DiscardHandler), PodInterface, TAP, nil); err != nil {
			t.Errorf("second attach: %v", err)
		}
	})
}

type nicWant struct {
	TAP, MAC, Address, Gateway string
	MTU                        int
}

// redirectTarget is the ifindex l's ingress filter redirects to (0: none).
func redirectTarget(t *testing.T, l netlink.Link) int {
	filters, err := netlink.FilterList(l, netlink.MakeHandle(0xffff, 0))
	if err != nil {
		return 0
	}
	for _, f := range filters {
		if u, ok := f.(*netlink.U32); ok {
			for _, a := range u.Actions {
				if m, ok := a.(*netlink.MirredAction); ok && m.MirredAction == netlink.TCA_EGRESS_REDIR {
					return m.Ifindex
				}
			}
		}
	}
	return 0
}

func TestNameservers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("search svc.cluster.local\nnameserver 10.96.0.10\nnameserver ::1\noptions ndots:5\nnameserver 1.1.1.1\n"), 0o644)
	got := Nameservers(p)
	want := []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("1.1.1.1")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if Nameservers(filepath.Join(t.TempDir(), "missing")) != nil {
		t.Fatal("a missing file has nameservers")
	}
}
