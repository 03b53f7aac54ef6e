package supervisor

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
)

func TestGuestConfigRlimits(t *testing.T) {
	m := &spec.Machine{ID: "0123456789ab", Mode: spec.ModeApp, Process: spec.Process{Cmd: []string{"true"}}}
	cfg := GuestConfig(m, vmm.Caps{}, nil)
	if want := []vmconfig.Rlimit{{Resource: "nofile", Soft: workloadNoFile, Hard: workloadNoFile}}; !reflect.DeepEqual(cfg.Rlimits, want) {
		t.Fatalf("default rlimits: %+v", cfg.Rlimits)
	}
	m.Process.Rlimits = []spec.Rlimit{{Resource: "nofile", Soft: 1024, Hard: 4096}, {Resource: "core", Soft: 0, Hard: 0}}
	cfg = GuestConfig(m, vmm.Caps{}, nil)
	want := []vmconfig.Rlimit{{Resource: "nofile", Soft: 1024, Hard: 4096}, {Resource: "core"}}
	if !reflect.DeepEqual(cfg.Rlimits, want) {
		t.Fatalf("the machine's rlimits: got %+v, want %+v", cfg.Rlimits, want)
	}
}

// An app VM's root disk is the clone its teardown deletes: its init need not flush it. A
// system VM's init hands PID 1 over and keeps the full flush on its failure path.
func TestGuestConfigDiscardsOnlyAnAppVMsRoot(t *testing.T) {
	m := &spec.Machine{ID: "0123456789ab", Mode: spec.ModeApp, Process: spec.Process{Cmd: []string{"true"}}}
	if cfg := GuestConfig(m, vmm.Caps{}, nil); !cfg.DiscardRoot {
		t.Error("app VM: discard_root not set")
	}
	m.Mode = spec.ModeSystem
	if cfg := GuestConfig(m, vmm.Caps{}, nil); cfg.DiscardRoot {
		t.Error("system VM: discard_root set")
	}
}

func TestAttachedNICReachesTheGuestAndTheVMM(t *testing.T) {
	m := &spec.Machine{ID: "0123456789ab", Mode: spec.ModeApp, Process: spec.Process{Cmd: []string{"true"}},
		AttachedNIC: &spec.AttachedNIC{TAP: "fgtap0", MAC: "0a:58:0a:58:00:05", Address: netip.MustParsePrefix("10.88.0.5/16"),
			Gateway: netip.MustParseAddr("10.88.0.1"), MTU: 1450, DNS: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
			NetNS: "/var/run/netns/cni-1"}}
	vm := &VM{Machine: m}
	want := &vmconfig.Network{MAC: "0a:58:0a:58:00:05", Address: "10.88.0.5/16", Gateway: "10.88.0.1", MTU: 1450, DNS: []string{"10.96.0.10"}}
	if got := vm.guestNetwork(); !reflect.DeepEqual(got, want) {
		t.Fatalf("guest network: got %+v, want %+v", got, want)
	}
	if nics := vm.nics(); len(nics) != 1 || nics[0] != (vmm.NIC{TAP: "fgtap0", MAC: "0a:58:0a:58:00:05", NetNS: "/var/run/netns/cni-1"}) {
		t.Fatalf("nics: %+v", nics)
	}
}
