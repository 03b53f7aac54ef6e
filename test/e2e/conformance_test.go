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
	store, err := assets.Open(filepath.Join(stateDir, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kd, k, err := store.DefaultKernel(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, im, err := store.DefaultImage(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	base, err := initrd.Base(store, kd, k, filepath.Join(binDir, "firegopher-init"))
	if err != nil {
		t.Fatal(err)
	}
	vmmtest.Run(t, vmmtest.Harness{
		Backend:     backend,
		BootTimeout: 2 * time.Minute,
		Spec: func(t *testing.T, dir string, cfg vmconfig.Config) vmm.Spec {
			rootfs := filepath.Join(dir, supervisor.DiskFile)
			if _, err := disk.Clone(store.Path(im.Rootfs), rootfs); err != nil {
				t.Fatal(err)
			}
			ird := filepath.Join(dir, supervisor.InitrdFile)
			if err := initrd.ForVM(ird, base, &cfg); err != nil {
				t.Fatal(err)
			}
			return vmm.Spec{
				ID: "conformance", Dir: dir, CPUs: 1, MemoryMiB: 512,
				Kernel: store.Path(k.Vmlinux), Initrd: ird, Cmdline: supervisor.Cmdline,
				Disks:      []vmm.Disk{{Path: rootfs, Serial: supervisor.RootSerial}},
				ConsoleLog: filepath.Join(dir, supervisor.ConsoleLog),
				MMIO:       mmio,
			}
		},
	})
}
