package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/vmm"
)

func TestArgsTCGUsesQ35AndVirtioPCI(t *testing.T) {
	b := &Backend{Path: "qemu-system-x86_64", Accel: AccelTCG}
	args := strings.Join(b.Args(vmm.Spec{
		ID: "abc", CPUs: 2, MemoryMiB: 512, Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0",
		Disks: []vmm.Disk{{Path: "/d,with,commas", Serial: "root"}},
		NICs:  []vmm.NIC{{TAP: "tap0123456789a", MAC: "02:fc:00:00:00:01"}},
		Dir:   "/run", ConsoleLog: "/run/console.log",
	}), " ")
	for _, want := range []string{
		"-machine q35 ", "-smp 2", "-m 512M", "-no-reboot", "-accel tcg,thread=multi",
		"file=/d,,with,,commas", "virtio-blk-pci,drive=disk0,serial=root",
		"tap,id=net0,ifname=tap0123456789a,script=no,downscript=no", "virtio-net-pci,netdev=net0,mac=02:fc:00:00:00:01",
		"socket,id=ctl,path=/run/control.sock", "reboot=k", "firegopher.control=virtio-serial:org.firegopher.ctl", "qmp.sock,server=on,wait=off", "name=org.firegopher.ctl",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "microvm") {
		t.Error("microvm under TCG hangs one boot in five")
	}
}

func TestArgsKVMUsesMicrovmAndMMIO(t *testing.T) {
	b := &Backend{Accel: AccelKVM}
	args := strings.Join(b.Args(vmm.Spec{ID: "a", CPUs: 1, MemoryMiB: 256, Disks: []vmm.Disk{{Path: "/d", Serial: "root"}}}), " ")
	if !strings.Contains(args, "microvm,accel=kvm") || !strings.Contains(args, "virtio-blk-device") {
		t.Fatalf("%s", args)
	}
}

func TestProbeAccelNeedsVirtualisationFlags(t *testing.T) {
	dir := t.TempDir()
	cpuinfo := filepath.Join(dir, "cpuinfo")
	os.WriteFile(cpuinfo, []byte("processor\t: 0\nflags\t\t: fpu sse2 hypervisor\n"), 0o644)
	// No vmx/svm (the PVM-nested /dev/kvm of this host): TCG, whatever /dev/kvm says.
	if got := ProbeAccel(cpuinfo, "/dev/kvm"); got != AccelTCG {
		t.Fatalf("got %s", got)
	}
	os.WriteFile(cpuinfo, []byte("flags\t\t: fpu vmx\n"), 0o644)
	if got := ProbeAccel(cpuinfo, filepath.Join(dir, "no-kvm")); got != AccelTCG {
		t.Fatalf("vmx without /dev/kvm: got %s", got)
	}
}

func TestForcedKVMWithoutVirtualisationFailsAtOnce(t *testing.T) {
	cpuinfo := filepath.Join(t.TempDir(), "cpuinfo")
	os.WriteFile(cpuinfo, []byte("flags\t\t: fpu sse2 hypervisor\n"), 0o644)
	err := kvmUsable(cpuinfo, "/dev/kvm")
	if err == nil || !strings.Contains(err.Error(), "no vmx or svm") {
		t.Fatalf("err %v, want it to say the CPU has no vmx/svm", err)
	}
}

func TestArgsWithoutControlChannel(t *testing.T) {
	b := &Backend{Accel: AccelTCG}
	args := strings.Join(b.Args(vmm.Spec{ID: "a", Dir: "/run/vm", CPUs: 1, MemoryMiB: 256, NoControl: true,
		Disks: []vmm.Disk{{Path: "/d"}}}), " ")
	if strings.Contains(args, "virtserialport") || strings.Contains(args, "firegopher.control") {
		t.Fatalf("a guest without a control channel gets none:\n%s", args)
	}
	if !strings.Contains(args, "-qmp unix:/run/vm/qmp.sock,server=on,wait=off") || !strings.HasSuffix(args, "virtio-blk-pci,drive=disk0") {
		t.Fatalf("%s", args)
	}
}

func TestArgsMMIOUnderTCGUsesMicrovmWithTheTSCRate(t *testing.T) {
	b := &Backend{Accel: AccelTCG, tscArgs: "tsc_early_khz=2200000 tsc=reliable"}
	args := strings.Join(b.Args(vmm.Spec{ID: "a", Dir: "/run/vm", CPUs: 1, MemoryMiB: 256, NoControl: true, MMIO: true,
		Cmdline: "rw console=ttyS0", Disks: []vmm.Disk{{Path: "/d"}}, NICs: []vmm.NIC{{TAP: "tap0", MAC: "02:fc:00:00:00:01"}}}), " ")
	for _, want := range []string{"-machine microvm,accel=tcg,acpi=on", "virtio-blk-device,drive=disk0", "virtio-net-device,netdev=net0",
		"rw console=ttyS0 reboot=k tsc_early_khz=2200000 tsc=reliable"} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q:\n%s", want, args)
		}
	}
}
