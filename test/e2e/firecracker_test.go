//go:build e2e

package e2e

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker"
	"github.com/firegopher/firegopher/internal/vmm/vmmtest"
)

// TestRealFirecrackerConformance runs the vmm seam's conformance suite against a real
// Firecracker release under its real jailer, booting the default kernel and image, on a KVM
// host: FIREGOPHER_E2E_FIRECRACKER=/path/to/release-dir (holding `firecracker` and `jailer`,
// e.g. the unpacked release-v1.16.1-x86_64 with its binaries renamed). Without it, or on a
// host without usable KVM (this repository's CI), it says so and does not run: the
// Firecracker backend is covered there by the spec-driven doubles (internal/vmm/firecracker).
func TestRealFirecrackerConformance(t *testing.T) {
	release := os.Getenv("FIREGOPHER_E2E_FIRECRACKER")
	if release == "" {
		t.Skip("NOT RUN: set FIREGOPHER_E2E_FIRECRACKER=/path/to/release-dir on a KVM host to run the suite against real Firecracker")
	}
	ctx := context.Background()
	fc, err := firecracker.New(ctx, filepath.Join(release, "firecracker"))
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(stateDir, "jail")
	os.MkdirAll(base, 0o755)
	owners, err := jail.OpenAllocator(filepath.Join(stateDir, "jail.db"), jail.DefaultRange)
	if err != nil {
		t.Fatal(err)
	}
	fc.Jailer = &firecracker.Jailer{Binary: filepath.Join(release, "jailer"), Base: base, Owners: owners,
		Cgroups: firecracker.CgroupLimitsIfAvailable}
	fc.Logger = slog.New(slog.DiscardHandler)
	boot := defaultBootAssets(t)
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
