package taskservice

import (
	"log/slog"
	"net"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"

	"github.com/firegopher/firegopher/internal/podnet"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/testutil/nstest"
	"github.com/firegopher/firegopher/internal/vmm"
)

// A container in its pod's network namespace (the shim's) gets the pod's network on
// whichever VMM the shim runs, default or asked for: QEMU opens the TAP as our child,
// jailed Firecracker joins the namespace the NIC names, the one the OCI spec gives. A
// container whose namespace is not the shim's gets none.
func TestPodNetworkOnEveryVMM(t *testing.T) {
	pod, peer := nstest.New(t, "tspod"), nstest.New(t, "tscni")
	nstest.Veth(t, pod, podnet.PodInterface, peer, "peer0")
	pod.Run(t, func() error {
		eth0, err := netlink.LinkByName(podnet.PodInterface)
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.99.0.5/24")
		if err := netlink.AddrAdd(eth0, addr); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.99.0.1")})
	})
	oci := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: pod.Path()}}}}
	h := &supervisor.Host{StateDir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}
	log := slog.New(slog.DiscardHandler)
	for _, name := range []string{vmm.QEMU, vmm.Firecracker} {
		v := spec.VMM{Backend: name, Accel: "tcg"}
		s := New(Config{Host: h, VMM: v}, "testns", &recorder{}, func() {})
		c := &container{id: "c-" + name}
		m := &spec.Machine{VMM: v}
		// Not in the pod's namespace: no network.
		if err := s.attachPodNetwork(log, c, oci, m); err != nil || m.AttachedNIC != nil {
			t.Fatalf("%s, outside the pod's namespace: %+v %v, want no NIC", name, m.AttachedNIC, err)
		}
		pod.Run(t, func() error {
			if err := s.attachPodNetwork(log, c, oci, m); err != nil {
				return err
			}
			s.detachPodNetwork(c)
			return nil
		})
		switch {
		case m.AttachedNIC == nil || m.AttachedNIC.TAP != podnet.TAP:
			t.Errorf("%s: NIC %+v, want the pod's TAP %s", name, m.AttachedNIC, podnet.TAP)
		case m.AttachedNIC.NetNS != pod.Path():
			t.Errorf("%s: the NIC names namespace %q, want the pod's %s", name, m.AttachedNIC.NetNS, pod.Path())
		case m.VMM != v:
			t.Errorf("%s: the VM runs on %+v, want %+v", name, m.VMM, v)
		}
	}
}
