package supervisor

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/firegopher/firegopher/internal/network"
	"github.com/firegopher/firegopher/internal/network/firewall"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/testutil/nstest"
)

// inNetnsEnv marks this test binary as re-executed inside a namespace the test made.
const inNetnsEnv = "SUPERVISOR_TEST_IN_NETNS"

// TestFaultAtEveryStepWithNetworkLeavesNothing is the fault-at-every-step test with the
// network steps doing real work: TAP, nft elements, address, DHCP. The whole test process
// runs inside a network namespace of its own (`ip netns exec`), so nothing it does can
// reach the host's namespace.
func TestFaultAtEveryStepWithNetworkLeavesNothing(t *testing.T) {
	if os.Getenv(inNetnsEnv) == "" {
		ns := nstest.New(t, "sup")
		cmd := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0],
			"-test.run=^TestFaultAtEveryStepWithNetworkLeavesNothing$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS") {
			t.Fatalf("in namespace %s: %v\n%s", ns.Name, err, out)
		}
		return
	}
	for k, failing := range DefaultSteps() {
		t.Run(failing.Name, func(t *testing.T) {
			h := testHost(t)
			m := testMachine(t, h, "sleep", "100")
			m.Name = "netvm"
			m.Network = &spec.Network{Pool: netip.MustParsePrefix("172.16.0.0/16"), DHCP: spec.DHCPEmbedded, RunID: m.ID, Slot: m.Name}
			c, err := h.Create(m, true)
			if err != nil {
				t.Fatal(err)
			}
			vm, err := h.NewVM(c.st, c.Record)
			if err != nil {
				t.Fatal(err)
			}
			steps := DefaultSteps()
			steps[k].Do = func(context.Context, *VM) error { return errors.New("injected") }
			if _, err := Supervise(context.Background(), vm, Options{Steps: steps, Lock: c.lock}); err == nil {
				t.Fatal("the start should have failed")
			}
			assertNothingLeft(t, h, vm.Dir)
			assertNoNetworkLeft(t, h, m)
		})
	}
}

// assertNoNetworkLeft: in this (test's own) namespace, no TAP or host-side link, no nft
// element and no address of m remain.
func assertNoNetworkLeft(t *testing.T, h *Host, m *spec.Machine) {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "tap") {
			t.Errorf("link %s left behind", l.Attrs().Name)
		}
	}
	if taps, err := firewall.TAPs(); err == nil && len(taps) > 0 {
		t.Errorf("firewall elements left behind: %v", taps)
	}
	a, err := network.OpenAllocator(h.NetworkDB(), m.Network.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if _, found, err := a.Lookup(m.ID, m.Name); err != nil || found {
		t.Errorf("address still allocated (%v)", err)
	}
}
