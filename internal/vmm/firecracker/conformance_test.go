package firecracker

import (
	"path/filepath"
	"testing"

	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
	"github.com/firegopher/firegopher/internal/vmm/vmmtest"
)

// harness boots the conformance suite's guests on the fake of rel: an initrd holding only
// the config layer (the fake guest reads it as init does), a guest-config kernel.
func harness(rel fctest.Release) vmmtest.Harness {
	return vmmtest.Harness{
		Backend: backend(rel),
		Spec: func(t *testing.T, dir string, cfg vmconfig.Config) vmm.Spec {
			base := vmmtest.WriteFile(t, dir, "base.cpio", nil)
			ird := filepath.Join(dir, "initrd.cpio")
			if err := initrd.ForVM(ird, base, &cfg); err != nil {
				t.Fatal(err)
			}
			return vmm.Spec{
				ID: "fc1", Dir: dir, CPUs: 1, MemoryMiB: 128,
				Kernel:     vmmtest.WriteFile(t, dir, "vmlinux", []byte(testKernel)),
				Initrd:     ird,
				Cmdline:    "console=ttyS0 panic=-1",
				Disks:      []vmm.Disk{{Path: vmmtest.WriteFile(t, dir, "rootfs.ext4", nil)}},
				ConsoleLog: filepath.Join(dir, "console.log"),
			}
		},
	}
}

func TestConformance(t *testing.T) {
	forEachRelease(t, func(t *testing.T, rel fctest.Release) { vmmtest.Run(t, harness(rel)) })
}
