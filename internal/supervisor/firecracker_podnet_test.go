package supervisor

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/firegopher/firegopher/internal/flock"
	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/podnet"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/testutil/nstest"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

// TestFirecrackerPodNetwork: a container's VM with its pod's network (spec.AttachedNIC, as
// the shim makes it with podnet.Attach) runs on jailed Firecracker. The pod is a namespace
// of the test's own whose eth0 is a veth to a peer namespace (the CNI's side). The jailer
// joins the pod's namespace, Firecracker attaches the pod's TAP as the jail's uid, and the
// guest's DHCP discovery comes out of the peer end of eth0 through podnet's redirects. When
// the VM stops, and when gc reclaims a VM whose supervisor was killed, the jail is gone and
// the pod's namespace, TAP and redirects are left as the pod made them.
func TestFirecrackerPodNetwork(t *testing.T) {
	forEachFCRelease(t, func(t *testing.T, rel fctest.Release) {
		pod, peer := nstest.New(t, "pod"), nstest.New(t, "cni")
		nstest.Veth(t, pod, podnet.PodInterface, peer, "peer0")
		var nic *spec.AttachedNIC
		pod.Run(t, func() error {
			// What a CNI plugin leaves: eth0 with the pod's address and a default route.
			eth0, err := netlink.LinkByName(podnet.PodInterface)
			if err != nil {
				return err
			}
			addr, _ := netlink.ParseAddr("10.99.0.5/24")
			if err := netlink.AddrAdd(eth0, addr); err != nil {
				return err
			}
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.99.0.1")}); err != nil {
				return err
			}
			nic, err = podnet.Attach(slog.New(slog.DiscardHandler), podnet.PodInterface, podnet.TAP, nil)
			return err
		})
		// As the shim records it: the namespace the OCI spec names.
		nic.NetNS = pod.Path()
		var sock int
		peer.Run(t, func() (err error) { sock, err = nstest.PacketSocket("peer0"); return err })
		defer syscall.Close(sock)

		c := fcHostConfig(t, rel)
		h, jr := newFCHost(t, c, discardLog())
		m := fcMachine(t, h, fcKernel, "sh", "-c", "echo hello; exec sleep 100")
		m.AttachedNIC = nic
		rec := startFCDetached(t, h, c, m)
		waitForHello(t, rec.Dir)
		if src, dport, err := nstest.ReadUDPFrame(sock, 20*time.Second); err != nil || src != nic.MAC || dport != 67 {
			console, _ := os.ReadFile(filepath.Join(rec.Dir, ConsoleLog))
			t.Fatalf("on the pod's peer: a frame from %s to port %d (%v), want the guest's DHCPDISCOVER from %s\nconsole:\n%s", src, dport, err, nic.MAC, console)
		}
		al, ok, err := jr.Owners.Lookup(m.ID)
		if err != nil || !ok {
			t.Fatalf("the jail's owner: %v %v", ok, err)
		}
		if got := podTAPOwner(t, pod); got != strconv.Itoa(al.Owner.UID) {
			t.Errorf("the pod's TAP has owner %s while the VM runs, want the jail's uid %d", got, al.Owner.UID)
		}
		// Firecracker (the fake, which opened the TAP with TUNSETIFF) runs as the jail's
		// uid, in the pod's namespace.
		pids, err := jail.Processes("/proc", al.Owner)
		if err != nil || len(pids) == 0 {
			t.Fatalf("processes of the jail's uid %d: %v %v", al.Owner.UID, pids, err)
		}
		for _, pid := range pids {
			if !sameNetNS(t, pid, pod.Path()) {
				t.Errorf("jailed process %d is not in the pod's network namespace", pid)
			}
		}
		if err := h.Stop(rec, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if rec, err = h.Wait(rec); err != nil || rec.ExitCode == nil {
			t.Fatalf("after stop: %+v %v", rec, err)
		}
		assertNoJail(t, h, jr, m.ID)
		assertPodNetworkLeft(t, pod, "0")

		// The supervisor killed with SIGKILL (the jailed Firecracker survives it), then gc:
		// the jail goes, the pod's namespace and TAP stay.
		m2 := fcMachine(t, h, fcKernel, "sh", "-c", "echo hello; exec sleep 100")
		m2.AttachedNIC = nic
		rec2 := startFCDetached(t, h, c, m2)
		waitForHello(t, rec2.Dir)
		if err := syscall.Kill(rec2.SupervisorPID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := flock.WaitReleased(t.Context(), filepath.Join(rec2.Dir, LockFile)); err != nil {
			t.Fatal(err)
		}
		report, err := h.GC()
		if err != nil {
			t.Fatal(err)
		}
		if joined := strings.Join(report, "\n"); !strings.Contains(joined, "jail removed") || strings.Contains(joined, "network namespace") {
			t.Errorf("gc report: want the jail removed and no namespace:\n%s", joined)
		}
		assertNoJail(t, h, jr, m2.ID)
		assertPodNetworkLeft(t, pod, "")
	})
}

// assertPodNetworkLeft: the pod's namespace, its TAP (owned by wantOwner unless "") and
// the redirects between the TAP and eth0 are all still there.
func assertPodNetworkLeft(t *testing.T, pod *nstest.NS, wantOwner string) {
	t.Helper()
	if _, err := os.Stat(pod.Path()); err != nil {
		t.Fatalf("the pod's namespace: %v", err)
	}
	if got := podTAPOwner(t, pod); wantOwner != "" && got != wantOwner {
		t.Errorf("the pod's TAP has owner %s after the VM, want %s", got, wantOwner)
	}
	pod.Run(t, func() error {
		for _, ifname := range []string{podnet.TAP, podnet.PodInterface} {
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				return err
			}
			filters, err := netlink.FilterList(l, netlink.MakeHandle(0xffff, 0))
			if err != nil || len(filters) == 0 {
				t.Errorf("%s: no ingress redirect left (%v)", ifname, err)
			}
		}
		return nil
	})
}

// podTAPOwner is the owner uid the kernel reports for the pod's TAP ("-1": none).
func podTAPOwner(t *testing.T, pod *nstest.NS) string {
	t.Helper()
	// `ip netns exec` mounts the namespace's own sysfs.
	return strings.TrimSpace(pod.MustExec(t, "cat", "/sys/class/net/"+podnet.TAP+"/owner"))
}

func sameNetNS(t *testing.T, pid int, nsPath string) bool {
	t.Helper()
	a, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.Stat(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(a, b)
}
