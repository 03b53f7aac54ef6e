package qemu

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/vmm"
)

func templateSpec() vmm.Spec {
	return vmm.Spec{
		ID: "abc", CPUs: 1, MemoryMiB: 512, Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0",
		Disks: []vmm.Disk{{Path: "/root.qcow2", Serial: "root", Format: "qcow2"}, {Path: "/vol", Serial: "vol0"}},
		NICs:  []vmm.NIC{{TAP: "tap0", MAC: "02:fc:00:00:00:01"}},
		Dir:   "/run", ConsoleLog: "/run/console.log",
	}
}

// A template and its restores share one command line: the root disk's device, no other
// disk or NIC (they are hot-plugged), and the root ports to plug them into.
func TestTemplateArgsHoldTheRootDiskAndEmptyPorts(t *testing.T) {
	b := &Backend{Path: Binary, Accel: AccelTCG}
	args := strings.Join(b.templateArgs(templateSpec()), " ")
	for _, want := range []string{"file=/root.qcow2,format=qcow2", "virtio-blk-pci,drive=disk0,serial=root",
		"pcie-root-port,id=rp0,", "pcie-root-port,id=rp7,", "virtserialport"} {
		if !strings.Contains(args, want) {
			t.Errorf("template args lack %q:\n%s", want, args)
		}
	}
	for _, not := range []string{"/vol", "tap0", "rp8"} {
		if strings.Contains(args, not) {
			t.Errorf("template args hold %q:\n%s", not, args)
		}
	}
}

func TestCanTemplate(t *testing.T) {
	tcg, kvm := &Backend{Accel: AccelTCG}, &Backend{Accel: AccelKVM}
	if err := tcg.CanTemplate(templateSpec()); err != nil {
		t.Errorf("q35 app VM: %v", err)
	}
	mmio := templateSpec()
	mmio.MMIO = true
	crowded := templateSpec()
	for i := 0; i < templatePorts; i++ {
		crowded.Disks = append(crowded.Disks, vmm.Disk{Path: "/v"})
	}
	for name, tc := range map[string]struct {
		b *Backend
		s vmm.Spec
	}{"kvm": {kvm, templateSpec()}, "mmio": {tcg, mmio}, "ports": {tcg, crowded}} {
		if err := tc.b.CanTemplate(tc.s); err == nil {
			t.Errorf("%s: no reason given", name)
		}
	}
}

func TestDiskSizeReadsQcow2VirtualSize(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "d.qcow2")
	hdr := make([]byte, 512)
	copy(hdr, "QFI\xfb")
	binary.BigEndian.PutUint64(hdr[24:], 590<<20)
	os.WriteFile(q, hdr, 0o644)
	if n, err := DiskSize(vmm.Disk{Path: q, Format: "qcow2"}); err != nil || n != 590<<20 {
		t.Fatalf("qcow2: %d %v", n, err)
	}
	if n, err := DiskSize(vmm.Disk{Path: q}); err != nil || n != 512 {
		t.Fatalf("raw: %d %v", n, err)
	}
	if _, err := DiskSize(vmm.Disk{Path: filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("a missing disk has a size")
	}
}
