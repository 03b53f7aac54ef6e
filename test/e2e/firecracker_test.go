//go:build e2e

package e2e

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/kernel"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker"
	"github.com/firegopher/firegopher/internal/vmm/qemu"
	"github.com/firegopher/firegopher/internal/vmm/vmmtest"
)

// TestRealFirecrackerConformance runs the vmm seam's conformance suite against a real
// Firecracker release under its real jailer, booting the default kernel and image, on a KVM
// host: FIREGOPHER_E2E_FIRECRACKER=/path/to/release-dir, the unpacked release tarball
// (release-vX-x86_64, holding firecracker-vX-x86_64 and jailer-vX-x86_64) or a directory
// holding `firecracker` and `jailer`. Without it, on a host without usable KVM (this
// repository's CI), or with a release the default kernel cannot boot (< 1.8), it says so
// and does not run: the Firecracker backend is covered there by the spec-driven doubles
// (internal/vmm/firecracker, and `run --vmm firecracker` in cmd/firegopher).
func TestRealFirecrackerConformance(t *testing.T) {
	release := os.Getenv("FIREGOPHER_E2E_FIRECRACKER")
	if release == "" {
		t.Skip("NOT RUN: set FIREGOPHER_E2E_FIRECRACKER=/path/to/release-dir on a KVM host to run the suite against real Firecracker")
	}
	if qemu.ProbeAccel("/proc/cpuinfo", "/dev/kvm") != qemu.AccelKVM {
		t.Skip("NOT RUN: FIREGOPHER_E2E_FIRECRACKER is set, but this host has no usable KVM (no vmx/svm flag, or /dev/kvm does not answer)")
	}
	ctx := context.Background()
	fc, err := firecracker.New(ctx, releaseBinary(t, release, "firecracker"))
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(stateDir, "jail")
	os.MkdirAll(base, 0o755)
	owners, err := jail.OpenAllocator(filepath.Join(stateDir, "jail.db"), jail.DefaultRange)
	if err != nil {
		t.Fatal(err)
	}
	fc.Jailer = &firecracker.Jailer{Binary: releaseBinary(t, release, "jailer"), Base: base, Owners: owners,
		Cgroups: firecracker.CgroupLimitsIfAvailable}
	fc.Logger = slog.New(slog.DiscardHandler)
	boot := defaultBootAssets(t)
	if err := fc.CheckKernel(ctx, boot.store.Path(boot.kernel.Vmlinux), mmioModule(t, boot)); errors.Is(err, firecracker.ErrNoMMIOCmdline) {
		t.Skipf("NOT RUN: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	vmmtest.Run(t, vmmtest.Harness{
		Backend:     fc,
		BootTimeout: time.Minute,
		Spec: func(t *testing.T, _ string, cfg vmconfig.Config) vmm.Spec {
			// The jail links the VM's files into its chroot: the VM's dir must be on the
			// state dir's filesystem, as supervisor's are.
			os.MkdirAll(filepath.Join(stateDir, "vms"), 0o755)
			dir, err := os.MkdirTemp(filepath.Join(stateDir, "vms"), ".e2e-fc-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			return boot.spec(t, filepath.Base(dir)[len(".e2e-fc-"):], dir, cfg)
		},
	})
}

// releaseBinary is name ("firecracker", "jailer") in dir: as it is, or as the release
// tarball names it (name-vX.Y.Z-x86_64).
func releaseBinary(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	m, _ := filepath.Glob(filepath.Join(dir, name+"-v*-x86_64"))
	if len(m) != 1 {
		t.Fatalf("FIREGOPHER_E2E_FIRECRACKER=%s: no %s nor one %s-vX-x86_64 in it", dir, name, name)
	}
	return m[0]
}

// mmioModule is the default kernel's virtio_mmio.ko (nil when built in), for CheckKernel.
func mmioModule(t *testing.T, b bootAssets) []byte {
	t.Helper()
	for _, mod := range b.kernel.Modules {
		if kernel.Name(path.Base(mod.Path)) == "virtio_mmio" {
			data, err := os.ReadFile(b.store.Path(mod.Digest))
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
	return nil
}
