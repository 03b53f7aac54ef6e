package supervisor

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/firegopher/firegopher/internal/flock"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/testutil/nstest"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

// TestFirecrackerNetworkThenKill9AndGC: a jailed VM with --net gets its own network
// namespace, whose host end carries the slot's TAP name and address; the guest's DHCP
// request through tap0 is answered by the embedded server on that host end. Then its
// supervisor is killed with SIGKILL (the jailed Firecracker survives it), and gc leaves no
// jail, owner, namespace, host link, firewall element, address or process. The whole test
// runs inside a network namespace of its own (`ip netns exec`).
func TestFirecrackerNetworkThenKill9AndGC(t *testing.T) {
	if os.Getenv(inNetnsEnv) == "" {
		nstest.RequireRoot(t)
		ns := nstest.New(t, "fcsup")
		cmd := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0],
			"-test.run=^TestFirecrackerNetworkThenKill9AndGC$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS") || strings.Contains(string(out), "--- SKIP") {
			t.Fatalf("in namespace %s: %v\n%s", ns.Name, err, out)
		}
		return
	}
	forEachFCRelease(t, func(t *testing.T, rel fctest.Release) {
		c := fcHostConfig(t, rel)
		h, jr := newFCHost(t, c, discardLog())
		m := fcMachine(t, h, fcKernel, "sh", "-c", "echo hello; exec sleep 100")
		m.Name = "netvm"
		m.Network = &spec.Network{Pool: netip.MustParsePrefix("172.16.0.0/16"), DHCP: spec.DHCPEmbedded, RunID: m.ID, Slot: m.Name}
		rec := startFCDetached(t, h, c, m)
		waitForHello(t, rec.Dir)
		if rec.Network == nil || rec.Network.TAP == "" {
			t.Fatalf("network record %+v", rec.Network)
		}
		hostIf := rec.Network.TAP
		l, err := netlink.LinkByName(hostIf)
		if err != nil || l.Type() != "veth" {
			t.Fatalf("host end %s: %v (%v), want the VM namespace's veth", hostIf, l, err)
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IP.String() != rec.Network.Host {
			t.Errorf("host end %s addresses %v, want %s", hostIf, addrs, rec.Network.Host)
		}
		// The fake guest retransmits its DHCPDISCOVER through tap0 until the VM ends; the
		// embedded server answers it on the host end (logged at Debug to supervisor.log).
		supLog := filepath.Join(rec.Dir, SupervisorLog)
		deadline := time.Now().Add(20 * time.Second)
		for {
			b, _ := os.ReadFile(supLog)
			if offered(string(b), m.ID) {
				break
			}
			if time.Now().After(deadline) {
				console, _ := os.ReadFile(filepath.Join(rec.Dir, ConsoleLog))
				t.Fatalf("no DHCP offer to the guest\nsupervisor.log:\n%s\nconsole:\n%s", b, console)
			}
			time.Sleep(50 * time.Millisecond)
		}

		// kill -9 of the supervisor: the jailed Firecracker lost its parent-death signal.
		rec, err = h.Lookup(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(rec.SupervisorPID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := flock.WaitReleased(t.Context(), filepath.Join(rec.Dir, LockFile)); err != nil {
			t.Fatal(err)
		}
		if ids, err := jr.Jails(); err != nil || len(ids) != 1 {
			t.Fatalf("jails after the supervisor's death: %v %v; want the VM's", ids, err)
		}
		report, err := h.GC()
		if err != nil {
			t.Fatal(err)
		}
		joined := strings.Join(report, "\n")
		for _, want := range []string{"jail removed", "network namespace fg-" + m.ID + " removed"} {
			if !strings.Contains(joined, want) {
				t.Errorf("gc report lacks %q:\n%s", want, joined)
			}
		}
		assertNoJail(t, h, jr, m.ID)
		assertNoNetworkLeft(t, h, m) // the host end, hostIf, is a tap* link too
		// gc again: nothing more to do.
		if report, err := h.GC(); err != nil || len(report) > 0 {
			t.Errorf("second gc: %v %v", report, err)
		}
	})
}

// offered says whether log holds the embedded DHCP server's offer to VM id's guest.
func offered(log, id string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `msg="dhcp: replied"`) && strings.Contains(line, "vm="+id) && strings.Contains(line, "reply=OFFER") {
			return true
		}
	}
	return false
}

// TestFirecrackerFaultAtEveryStepLeavesNothing fails the start of a jailed VM with a
// network at each step in turn: the undos leave no jail, namespace, host link, firewall
// element or address. It runs inside a network namespace of its own.
func TestFirecrackerFaultAtEveryStepLeavesNothing(t *testing.T) {
	if os.Getenv(inNetnsEnv) == "" {
		nstest.RequireRoot(t)
		ns := nstest.New(t, "fcflt")
		cmd := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0],
			"-test.run=^TestFirecrackerFaultAtEveryStepLeavesNothing$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS") || strings.Contains(string(out), "--- SKIP") {
			t.Fatalf("in namespace %s: %v\n%s", ns.Name, err, out)
		}
		return
	}
	rel := fcRelease(t, "1.16.1")
	for k, failing := range DefaultSteps() {
		t.Run(failing.Name, func(t *testing.T) {
			h, jr := newFCHost(t, fcHostConfig(t, rel), discardLog())
			m := fcMachine(t, h, fcKernel, "sleep", "100")
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
			assertNoJail(t, h, jr, m.ID)
			assertNoNetworkLeft(t, h, m)
		})
	}
}
