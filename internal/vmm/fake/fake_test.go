package fake_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/fake"
	"github.com/firegopher/firegopher/internal/vmm/vmmtest"
)

func TestMain(m *testing.M) {
	fake.RunGuestIfRequested()
	os.Exit(m.Run())
}

// Harness is the fake backend's conformance harness: an initrd with only the config layer.
func harness() vmmtest.Harness {
	return vmmtest.Harness{
		Backend: fake.New(),
		Spec: func(t *testing.T, dir string, cfg vmconfig.Config) vmm.Spec {
			base := vmmtest.WriteFile(t, dir, "base.cpio", nil)
			ird := filepath.Join(dir, "initrd.cpio")
			if err := initrd.ForVM(ird, base, &cfg); err != nil {
				t.Fatal(err)
			}
			return vmm.Spec{
				ID: "fake1", Dir: dir, CPUs: 1, MemoryMiB: 128,
				Kernel: vmmtest.WriteFile(t, dir, "vmlinux", []byte("not a kernel")), Initrd: ird,
				Disks:      []vmm.Disk{{Path: vmmtest.WriteFile(t, dir, "rootfs.ext4", nil), Serial: "root"}},
				ConsoleLog: filepath.Join(dir, "console.log"),
			}
		},
	}
}

func TestConformance(t *testing.T) { vmmtest.Run(t, harness()) }
