package supervisor

import (
	"path/filepath"
	"strings"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/volume"
)

// The forms derived from a machine live here, in one place: the config its init reads and
// the spec its VMM is started with.

// workloadNoFile is the workload's open-files limit.
const workloadNoFile = 65536

// GuestConfig is what init is told about m. caps says how the guest finds its root disk;
// network is the interface's configuration (nil: no network).
func GuestConfig(m *spec.Machine, caps vmm.Caps, network *vmconfig.Network) vmconfig.Config {
	cfg := vmconfig.Config{
		Version:  vmconfig.Version,
		Mode:     vmconfig.ModeApp,
		Hostname: m.Hostname(),
		// Root is the first disk: by its serial where the VMM sets one, else by position.
		Root:    vmconfig.Disk{FSType: "ext4"},
		Cmd:     m.Process.Cmd,
		Env:     m.Process.Env,
		WorkDir: m.Process.WorkDir,
		User:    m.Process.User,
		Rlimits: []vmconfig.Rlimit{{Resource: "nofile", Soft: workloadNoFile, Hard: workloadNoFile}},
		Network: network,
		Stdin:   m.Process.Stdin,
	}
	if len(m.Process.Rlimits) > 0 {
		// The machine's own limits (a container's config.json) replace the defaults whole.
		cfg.Rlimits = nil
		for _, r := range m.Process.Rlimits {
			cfg.Rlimits = append(cfg.Rlimits, vmconfig.Rlimit{Resource: r.Resource, Soft: r.Soft, Hard: r.Hard})
		}
	}
	if t := m.Process.TTY; t != nil {
		cfg.TTY = &vmconfig.Terminal{Rows: t.Rows, Cols: t.Cols}
	}
	if caps.DiskSerials {
		cfg.Root.Serial = RootSerial
	}
	if m.Mode == spec.ModeSystem {
		cfg.Mode = vmconfig.ModeSystem
	} else {
		// The image's own machine-id (systemd's images leave it empty for first boot) is
		// left alone in system mode.
		cfg.MachineID = MachineID(m.ID)
		// The root disk is the clone clone-rootfs made; its undo deletes it.
		cfg.DiscardRoot = true
	}
	for _, f := range m.Files {
		cfg.Files = append(cfg.Files, vmconfig.File{Path: f.Path, Mode: f.Mode, Dir: f.Dir, Data: f.Data})
	}
	for i, v := range m.Volumes {
		// The volumes follow the root disk in VMMSpec's order.
		d := vmconfig.Disk{Index: 1 + i, FSType: "ext4"}
		if caps.DiskSerials {
			d = vmconfig.Disk{Serial: VolumeSerial(i), FSType: "ext4"}
		}
		cfg.Mounts = append(cfg.Mounts, vmconfig.Mount{Disk: d, Target: v.Target, ReadOnly: v.ReadOnly})
	}
	return cfg
}

// ForeignCmdline is the kernel command line of a machine that boots through its kernel
// image's own initrd, as falcosecurity/kernel-testing boots it (its /init ignores root=).
const ForeignCmdline = "rw console=ttyS0"

// VMMSpec is how the VMM runs m from dir: the root disk clone first, then the volumes in
// m's order (named ones from volumesDir, host directories' drives from dir), the initrd
// (ours with the config layer, or the kernel image's own for a foreign machine), the
// console log, and the NICs the network steps made.
func VMMSpec(m *spec.Machine, dir string, root vmm.Disk, volumesDir string, k *assets.Kernel, store *assets.Store, nics []vmm.NIC) vmm.Spec {
	s := vmm.Spec{
		ID:         m.ID,
		Dir:        dir,
		CPUs:       m.CPUs,
		MemoryMiB:  m.Memory.MiB(),
		Kernel:     store.Path(k.Vmlinux),
		Initrd:     filepath.Join(dir, InitrdFile),
		Cmdline:    Cmdline,
		Disks:      []vmm.Disk{root},
		NICs:       nics,
		ConsoleLog: filepath.Join(dir, ConsoleLog),
	}
	vols := &volume.Store{Dir: volumesDir}
	for i, v := range m.Volumes {
		d := vmm.Disk{Path: vols.DiskPath(v.Source), Serial: VolumeSerial(i), ReadOnly: v.ReadOnly}
		if v.IsDir() {
			d.Path = filepath.Join(dir, VolumeFile(i))
		}
		s.Disks = append(s.Disks, d)
	}
	if m.Mode == spec.ModeForeign {
		// Their initrd loads virtio_mmio (not virtio_pci) and mounts /dev/vda: the root disk
		// is the first virtio-mmio block device, and no firegopher channel exists.
		s.Initrd, s.Cmdline = "", strings.TrimSpace(ForeignCmdline+" "+m.KernelArgs)
		if k.Initrd != "" {
			s.Initrd = store.Path(k.Initrd)
		}
		s.Disks[0].Serial, s.NoControl, s.MMIO = "", true, true
	}
	return s
}

func (vm *VM) kernelDigest() assets.Digest { return assets.Digest(vm.Machine.Assets.Kernel) }
