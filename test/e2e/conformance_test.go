//go:build e2e

package e2e

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/disk"
	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/qemu"
	"github.com/firegopher/firegopher/internal/vmm/vmmtest"
)

// TestQEMUConformance runs the vmm seam's conformance suite against QEMU with real boots of
// the default kernel and image under our init: q35 with virtio-pci, and microvm with
// virtio-mmio (the machine kernel-testing's guests need, told the TSC rate under TCG).
func TestQEMUConformance(t *testing.T) {
	for _, mmio := range []bool{false, true} {
		name := "q35"
		if mmio {
			name = "microvm"
		}
		t.Run(name, func(t *testing.T) { qemuConformance(t, mmio) })
	}
}

func qemuConformance(t *testing.T, mmio bool) {
	backend, err := qemu.New("")
	if err != nil {
		t.Fatal(err)
	}
	boot := defaultBootAssets(t)
	vmmtest.Run(t, vmmtest.Harness{
		Backend:     backend,
		BootTimeout: 2 * time.Minute,
		Spec: func(t *testing.T, dir string, cfg vmconfig.Config) vmm.Spec {
			s := boot.spec(t, "conformance", dir, cfg)
			s.MMIO = mmio
			return s
		},
	})
}

// bootAssets are what a VM of the state dir boots: the default kernel and image, and the
// base initrd with this run's firegopher-init.
type bootAssets struct {
	store  *assets.Store
	kernel *assets.Kernel
	rootfs string
	base   string
}

func defaultBootAssets(t *testing.T) bootAssets {
	t.Helper()
	store, err := assets.Open(filepath.Join(stateDir, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, quiet := context.Background(), slog.New(slog.DiscardHandler)
	kd, k, err := store.DefaultKernel(ctx, quiet)
	if err != nil {
		t.Fatal(err)
	}
	_, im, err := store.DefaultImage(ctx, quiet)
	if err != nil {
		t.Fatal(err)
	}
	base, err := initrd.Base(store, kd, k, filepath.Join(binDir, "firegopher-init"))
	if err != nil {
		t.Fatal(err)
	}
	return bootAssets{store: store, kernel: k, rootfs: store.Path(im.Rootfs), base: base}
}

// spec makes a VM's root disk clone and initrd (its config cfg) in dir, and its VMM spec.
// The root disk has the serial cfg names, if any (backends without serials find it first).
func (b bootAssets) spec(t *testing.T, id, dir string, cfg vmconfig.Config) vmm.Spec {
	t.Helper()
	rootfs := filepath.Join(dir, supervisor.DiskFile)
	if _, err := disk.Clone(b.rootfs, rootfs); err != nil {
		t.Fatal(err)
	}
	ird := filepath.Join(dir, supervisor.InitrdFile)
	if err := initrd.ForVM(ird, b.base, &cfg); err != nil {
		t.Fatal(err)
	}
	return vmm.Spec{
		ID: id, Dir: dir, CPUs: 1, MemoryMiB: 512,
		Kernel: b.store.Path(b.kernel.Vmlinux), Initrd: ird, Cmdline: supervisor.Cmdline,
		Disks:      []vmm.Disk{{Path: rootfs, Serial: cfg.Root.Serial}},
		ConsoleLog: filepath.Join(dir, supervisor.ConsoleLog),
	}
}
