package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmm"
)

// stubSnapshotter records what prepareTemplate asks of a backend with templates.
type stubSnapshotter struct {
	created []vmm.Spec
	fail    error
	started []vmm.Spec // cold boots
}

func (s *stubSnapshotter) Name() string   { return "stub" }
func (s *stubSnapshotter) Caps() vmm.Caps { return vmm.Caps{DiskSerials: true} }
func (s *stubSnapshotter) Start(_ context.Context, sp vmm.Spec) (vmm.Instance, error) {
	s.started = append(s.started, sp)
	return nil, errors.New("stub: no VM")
}
func (s *stubSnapshotter) TemplateID() (string, error) { return "stub 1", nil }
func (s *stubSnapshotter) CanTemplate(vmm.Spec) error  { return nil }
func (s *stubSnapshotter) Restore(context.Context, vmm.Spec, string) (vmm.Restored, error) {
	return nil, errors.New("stub")
}
func (s *stubSnapshotter) CreateTemplate(_ context.Context, sp vmm.Spec, dir string, _ func(context.Context, net.Conn) error) error {
	s.created = append(s.created, sp)
	if s.fail != nil {
		return s.fail
	}
	return os.WriteFile(filepath.Join(dir, "state"), []byte("saved"), 0o644)
}

func stubVM(t *testing.T, h *Host, b vmm.Backend, m *spec.Machine) *VM {
	t.Helper()
	store, err := h.Store()
	if err != nil {
		t.Fatal(err)
	}
	k, err := store.LoadKernel(assets.Digest(m.Assets.Kernel))
	if err != nil {
		t.Fatal(err)
	}
	return &VM{Machine: m, Dir: t.TempDir(), Store: store, Backend: b, Log: discardLog(), kernel: k}
}

func TestPrepareTemplateBuildsOnceAndRestoresAfter(t *testing.T) {
	h := testHost(t)
	b := &stubSnapshotter{}
	m := testMachine(t, h, "true")
	m.VMM.Snapshot = true
	first := stubVM(t, h, b, m)
	if err := prepareTemplate(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	if len(b.created) != 1 || first.template == "" || !strings.HasPrefix(b.created[0].Initrd, h.CacheDir()) {
		t.Fatalf("first VM: %d builds, template %q, initrd %v", len(b.created), first.template, b.created)
	}
	m2 := *m
	m2.ID = spec.NewID()
	second := stubVM(t, h, b, &m2)
	if err := prepareTemplate(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	if len(b.created) != 1 || second.template != first.template || second.baseInitrd != first.baseInitrd {
		t.Fatalf("second VM: %d builds, template %q (first %q)", len(b.created), second.template, first.template)
	}
}

func TestPrepareTemplateColdBoots(t *testing.T) {
	h := testHost(t)
	for name, tc := range map[string]struct {
		edit   func(*spec.Machine)
		fail   error
		builds int
	}{
		"not asked":        {edit: func(m *spec.Machine) { m.VMM.Snapshot = false }},
		"system mode":      {edit: func(m *spec.Machine) { m.Mode = spec.ModeSystem }},
		"config too large": {edit: func(m *spec.Machine) { m.Files = []spec.File{{Path: "/big", Mode: 0o644, Data: make([]byte, 2<<20)}} }},
		"build fails":      {fail: errors.New("no"), builds: 1},
	} {
		t.Run(name, func(t *testing.T) {
			b := &stubSnapshotter{fail: tc.fail}
			m := testMachine(t, h, "true")
			m.VMM.Snapshot = true
			if tc.edit != nil {
				tc.edit(m)
			}
			vm := stubVM(t, h, b, m)
			if err := prepareTemplate(context.Background(), vm); err != nil {
				t.Fatal(err)
			}
			if vm.template != "" || len(b.created) != tc.builds {
				t.Fatalf("template %q after %d builds, want a cold boot after %d", vm.template, len(b.created), tc.builds)
			}
		})
	}
}

func TestRestoreFailureBootsCold(t *testing.T) {
	h := testHost(t)
	b := &stubSnapshotter{}
	m := testMachine(t, h, "true")
	m.VMM.Snapshot = true
	vm := stubVM(t, h, b, m)
	if err := prepareTemplate(context.Background(), vm); err != nil || vm.template == "" {
		t.Fatalf("prepare: %v, template %q", err, vm.template)
	}
	// The stub's Restore fails; the VM is then started cold, with an initrd holding its config.
	if err := startVMM(context.Background(), vm); err == nil || !strings.Contains(err.Error(), "stub: no VM") {
		t.Fatalf("start: %v, want the cold start's error", err)
	}
	if len(b.started) != 1 || b.started[0].Initrd != vm.path(InitrdFile) || vm.template != "" {
		t.Fatalf("cold starts %v, template %q", b.started, vm.template)
	}
	if _, err := os.Stat(vm.path(InitrdFile)); err != nil {
		t.Fatalf("no per-VM initrd for the cold boot: %v", err)
	}
}
