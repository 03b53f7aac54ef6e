package backends

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fctest.Cleanup()
	os.Exit(code)
}

// installDouble installs the fctest doubles of version into h's cache as a release, from
// a tarball laid out as Firecracker's.
func installDouble(t *testing.T, h *supervisor.Host, version string) {
	t.Helper()
	tgz, err := fctest.Tarball(t.TempDir(), version)
	if err != nil {
		t.Fatal(err)
	}
	store, err := h.Store()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.ImportFirecracker(tgz, version, ""); err != nil {
		t.Fatal(err)
	}
}

func newHost(t *testing.T, log *slog.Logger) *supervisor.Host {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := NewHost(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// fakeKVM makes the KVM probe answer err for the test (no test may use KVM).
func fakeKVM(t *testing.T, err error) {
	saved := kvmError
	kvmError = func() error { return err }
	t.Cleanup(func() { kvmError = saved })
}

func TestDefaultBackend(t *testing.T) {
	t.Setenv(FirecrackerVersionEnv, "")
	var logs bytes.Buffer
	h := newHost(t, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

	fakeKVM(t, nil)
	if name := Name(h, spec.VMM{}); name != vmm.QEMU {
		t.Errorf("KVM and no release: %s, want qemu", name)
	}
	if !strings.Contains(logs.String(), "level=DEBUG") || !strings.Contains(logs.String(), "no Firecracker release") {
		t.Errorf("the expected default is said at debug, with why: %q", logs.String())
	}
	installDouble(t, h, "1.16.1")
	if name := Name(h, spec.VMM{}); name != vmm.Firecracker {
		t.Errorf("KVM and a release: %s, want firecracker", name)
	}
	if name := Name(h, spec.VMM{Backend: vmm.QEMU}); name != vmm.QEMU {
		t.Errorf("a machine naming qemu gets %s", name)
	}
	if n := strings.Count(logs.String(), "vmm: "); n != 1 {
		t.Errorf("the default was logged %d times for one host, want once: %q", n, logs.String())
	}

	// A release and no KVM: QEMU, and said out loud (info), as it surprises.
	logs.Reset()
	h2, err := NewHost(h.StateDir, h.Log)
	if err != nil {
		t.Fatal(err)
	}
	fakeKVM(t, errors.New("no /dev/kvm"))
	if name := Name(h2, spec.VMM{}); name != vmm.QEMU {
		t.Errorf("a release without KVM: %s, want qemu", name)
	}
	if !strings.Contains(logs.String(), "level=INFO") || !strings.Contains(logs.String(), "no /dev/kvm") {
		t.Errorf("a release that does not run is said at info, with why: %q", logs.String())
	}
	if b, err := h2.Backend(spec.VMM{Accel: "tcg"}); err != nil || !strings.HasPrefix(b.Name(), vmm.QEMU) {
		t.Errorf("the default backend without KVM: %v %v, want qemu", b, err)
	}
}

func TestUnknownBackend(t *testing.T) {
	h := newHost(t, nil)
	if _, err := h.Backend(spec.VMM{Backend: "bochs"}); err == nil || !strings.Contains(err.Error(), `"bochs"`) || !strings.Contains(err.Error(), "firecracker") {
		t.Errorf("bochs: %v", err)
	}
	for name, want := range map[string]bool{"": true, vmm.QEMU: true, vmm.Firecracker: true, "bochs": false} {
		if Known(name) != want {
			t.Errorf("Known(%q) = %v", name, !want)
		}
	}
}

func TestFirecrackerBackendWiring(t *testing.T) {
	t.Setenv(FirecrackerVersionEnv, "")
	t.Setenv(CgroupLimitsEnv, "if-available")
	t.Setenv(JailIDsEnv, "")
	h := newHost(t, nil)
	if _, err := h.Backend(spec.VMM{Backend: "firecracker"}); err == nil || !strings.Contains(err.Error(), "firegopher firecracker install") {
		t.Fatalf("no release installed: %v; want an error naming firegopher firecracker install", err)
	}
	if h.Jails != nil {
		t.Error("gc looks for jails before any VM was jailed")
	}
	installDouble(t, h, "1.6.0")
	installDouble(t, h, "1.16.1")

	b, err := h.Backend(spec.VMM{Backend: "firecracker"})
	if err != nil {
		t.Fatal(err)
	}
	fc, ok := b.(*firecracker.Backend)
	if !ok || fc.Jailer == nil {
		t.Fatalf("backend %T %+v, want a jailed Firecracker", b, b)
	}
	store, _ := h.Store()
	newest, err := store.LoadFirecracker("1.16.1")
	if err != nil {
		t.Fatal(err)
	}
	jr := fc.Jailer
	switch {
	case fc.Version.String() != "1.16.1":
		t.Errorf("version %s, want the newest installed, 1.16.1", fc.Version)
	case fc.Binary != store.Path(newest.Firecracker) || jr.Binary != store.Path(newest.Jailer):
		t.Errorf("binaries %s and %s, want the cached release's", fc.Binary, jr.Binary)
	case jr.Base != h.JailBase() || jr.Owners == nil || jr.Cgroups != firecracker.CgroupLimitsIfAvailable:
		t.Errorf("jailer %+v, want base %s, owners, limits if available", jr, h.JailBase())
	case jr.NetNS == nil || jr.NetNS("aaaaaaaaaaaa") != "":
		t.Error("a VM without a network namespace must not be asked to join one")
	case !fc.Caps().NetNS:
		t.Error("the jailed backend does not say its VMs have a network namespace each")
	}
	if h2, err := NewHost(h.StateDir, h.Log); err != nil || h2.Jails == nil {
		t.Errorf("once jails exist, gc must look for them (%v)", err)
	}

	t.Setenv(FirecrackerVersionEnv, "v1.6.0")
	if b, err := h.Backend(spec.VMM{Backend: "firecracker"}); err != nil || b.(*firecracker.Backend).Version.String() != "1.6.0" {
		t.Errorf("%s=v1.6.0: %v", FirecrackerVersionEnv, err)
	}
	t.Setenv(FirecrackerVersionEnv, "1.9.0")
	if _, err := h.Backend(spec.VMM{Backend: "firecracker"}); err == nil || !strings.Contains(err.Error(), "install --version 1.9.0") {
		t.Errorf("%s=1.9.0, not installed: %v", FirecrackerVersionEnv, err)
	}
	t.Setenv(FirecrackerVersionEnv, "")
	// Limits required: a host that cannot give them (v1, hybrid: this CI machine) is told
	// at once, with the way out.
	t.Setenv(CgroupLimitsEnv, "")
	cg, err := jail.DetectCgroups(jail.ProcMounts)
	if err == nil {
		_, err = cg.CgroupArgs(jail.DefaultParent, jail.LimitsFor(1, 128))
	}
	_, berr := h.Backend(spec.VMM{Backend: "firecracker"})
	t.Logf("limits required here: %v", berr)
	if err != nil && (berr == nil || !strings.Contains(berr.Error(), CgroupLimitsEnv+"=if-available")) {
		t.Errorf("limits required on a host without them (%v): %v", err, berr)
	}
	if err == nil && berr != nil {
		t.Errorf("limits required on a host with them: %v", berr)
	}
	t.Setenv(CgroupLimitsEnv, "sometimes")
	if _, err := h.Backend(spec.VMM{Backend: "firecracker"}); err == nil || !strings.Contains(err.Error(), CgroupLimitsEnv) {
		t.Errorf("%s=sometimes: %v", CgroupLimitsEnv, err)
	}
	t.Setenv(CgroupLimitsEnv, "if-available")
	t.Setenv(JailIDsEnv, "1960000000:100")
	if b, err := h.Backend(spec.VMM{Backend: "firecracker"}); err != nil || b.(*firecracker.Backend).Jailer.Owners.Range() != (jail.Range{First: 1960000000, Count: 100}) {
		t.Errorf("%s=1960000000:100: %v", JailIDsEnv, err)
	}
	for _, bad := range []string{"0:100", "1000", "a:b"} {
		t.Setenv(JailIDsEnv, bad)
		if _, err := h.Backend(spec.VMM{Backend: "firecracker"}); err == nil || !strings.Contains(err.Error(), JailIDsEnv) {
			t.Errorf("%s=%s: %v", JailIDsEnv, bad, err)
		}
	}
}
