package taskservice

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/containerd/containerd/errdefs"

	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/vmm"
)

// capsBackend is a backend that only has capabilities: podNetworkVMM never starts one.
type capsBackend struct {
	name string
	caps vmm.Caps
}

func (b capsBackend) Name() string   { return b.name }
func (b capsBackend) Caps() vmm.Caps { return b.caps }
func (b capsBackend) Start(context.Context, vmm.Spec) (vmm.Instance, error) {
	panic("not started")
}

// A container with its pod's network runs on a backend that can open the pod's TAP: a
// jailed (netns per VM) default gives way to QEMU, an asked-for one is refused.
func TestPodNetworkVMM(t *testing.T) {
	h := &supervisor.Host{StateDir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}
	h.Backend = func(v spec.VMM) (vmm.Backend, error) {
		return capsBackend{name: v.Backend, caps: vmm.Caps{NetNS: v.Backend == vmm.Firecracker}}, nil
	}
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		vmm       string
		isDefault bool
		want      string // "" for refused
	}{
		{vmm.QEMU, true, vmm.QEMU},
		{vmm.QEMU, false, vmm.QEMU},
		{vmm.Firecracker, true, vmm.QEMU},
		{vmm.Firecracker, false, ""},
	} {
		s := New(Config{Host: h, VMM: spec.VMM{Backend: tc.vmm, Accel: "tcg"}, VMMIsDefault: tc.isDefault}, "testns", &recorder{}, func() {})
		m := &spec.Machine{VMM: s.cfg.VMM, AttachedNIC: &spec.AttachedNIC{TAP: "fgtap0"}}
		err := s.podNetworkVMM(log, m)
		switch {
		case tc.want == "" && (err == nil || !errdefs.IsNotImplemented(errdefs.FromGRPC(err)) || !strings.Contains(err.Error(), "FIREGOPHER_VMM=qemu")):
			t.Errorf("%s asked for: %v, want a refusal naming the way out", tc.vmm, err)
		case tc.want != "" && (err != nil || m.VMM != spec.VMM{Backend: tc.want, Accel: "tcg"}):
			t.Errorf("%s (default %v): %+v %v, want %s", tc.vmm, tc.isDefault, m.VMM, err, tc.want)
		}
	}
}
