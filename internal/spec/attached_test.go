package spec

import (
	"net/netip"
	"strings"
	"testing"
)

func TestAttachedNICValidation(t *testing.T) {
	good := func() *Machine {
		return &Machine{ID: "0123456789ab", Mode: ModeApp, CPUs: 1, Memory: 512 * MiB,
			Process: Process{Cmd: []string{"true"}},
			AttachedNIC: &AttachedNIC{TAP: "fgtap0", MAC: "0a:58:0a:58:00:05",
				Address: netip.MustParsePrefix("10.88.0.5/16"), Gateway: netip.MustParseAddr("10.88.0.1"), MTU: 1500,
				NetNS: "/var/run/netns/cni-1"}}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("a good attached NIC: %v", err)
	}
	cases := map[string]func(m *Machine){
		"attached_nic.tap":     func(m *Machine) { m.AttachedNIC.TAP = "a-name-far-too-long" },
		"attached_nic.mac":     func(m *Machine) { m.AttachedNIC.MAC = "nope" },
		"attached_nic.address": func(m *Machine) { m.AttachedNIC.Address = netip.Prefix{} },
		"attached_nic.mtu":     func(m *Machine) { m.AttachedNIC.MTU = 10 },
		"attached_nic.netns":   func(m *Machine) { m.AttachedNIC.NetNS = "run/netns/cni-1" },
		"not both":             func(m *Machine) { m.Network = &Network{} },
		"only app VMs":         func(m *Machine) { m.Mode, m.Process.Cmd = ModeSystem, nil },
	}
	for want, breakIt := range cases {
		m := good()
		breakIt(m)
		if err := m.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v", want, err)
		}
	}
}
