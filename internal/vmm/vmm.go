// Package vmm is the seam between a VM's lifecycle and the monitor that runs it. A backend
// turns a Spec into a running VMM process and owns the host end of the guest's control
// channel (virtio-serial on QEMU, vsock on Firecracker), so the supervisor never knows which
// VMM it drives. Assets, disks and the initrd are prepared by the caller.
//
// Every backend passes the conformance suite in vmm/vmmtest.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// Disk is a raw disk image attached as a virtio block device. Disks[0] is the root disk.
type Disk struct {
	Path     string
	ReadOnly bool
	// Serial is the virtio serial the guest sees, on backends whose Caps().DiskSerials says
	// they can set one; others attach disks in order and the guest finds them by position.
	Serial string
	// Format is "raw" (the default, "") or "qcow2" (an overlay; Caps().Overlays).
	Format string
}

// NIC is a virtio-net interface backed by an existing TAP device on the host.
type NIC struct {
	TAP string
	MAC string
	// NetNS is the network namespace TAP is in, bound at a path (a Kubernetes pod's, made
	// by the CRI), when it is not the VMM's own: a backend whose VMM runs in a namespace of
	// its own (Caps.NetNS) runs that VM's VMM in this one instead; QEMU opens its TAPs in
	// the caller's namespace, which must be this one. "" for the VMM's own.
	NetNS string
}

// Spec is one VM to start. Paths are absolute.
type Spec struct {
	ID string
	// Dir is the VM's runtime directory: the backend keeps its sockets there, and tags the
	// VMM process with it (ProcessTagEnv) so that gc can tell whose process it is.
	Dir       string
	CPUs      int
	MemoryMiB int
	Kernel    string // ELF vmlinux
	Initrd    string
	// Cmdline is the caller's part of the kernel command line; the backend appends what
	// its devices need (the control transport, reboot=k, ...).
	Cmdline string
	Disks   []Disk
	NICs    []NIC
	// ConsoleLog receives the guest's serial console.
	ConsoleLog string
	// NoControl says the guest has no control channel: a foreign image that boots through
	// its own initrd and is reached over the network only.
	NoControl bool
	// MMIO asks for virtio-mmio devices (the transport kernel-testing's initrds load).
	MMIO bool
}

// Validate checks what every backend relies on.
func (s Spec) Validate() error {
	switch {
	case s.ID == "":
		return errors.New("vmm: id: empty")
	case s.Dir == "":
		return errors.New("vmm: dir: empty")
	case s.CPUs < 1:
		return fmt.Errorf("vmm: cpus: %d, want at least 1", s.CPUs)
	case s.MemoryMiB < 64:
		return fmt.Errorf("vmm: memory: %d MiB, want at least 64", s.MemoryMiB)
	case s.Kernel == "":
		return errors.New("vmm: kernel: empty")
	case len(s.Disks) == 0:
		return errors.New("vmm: disks: none")
	case s.ConsoleLog == "":
		return errors.New("vmm: console log: empty")
	}
	return nil
}

// Caps says what a backend's guests can rely on; the guest's config is derived from it
// before the VM starts.
type Caps struct {
	// DiskSerials: the guest sees Disk.Serial (QEMU). Firecracker answers GET_ID with an id
	// of its own, so there the guest finds its root disk by position.
	DiskSerials bool
	// Overlays: the VMM reads qcow2 overlays, so a VM's root disk can be one over the cached
	// raw image (a clone in constant time where the filesystem has no reflink).
	Overlays bool
	// NetNS: each VM's VMM runs in a network namespace of its own, which the caller makes
	// before Start (jail.CreateNetNS with the name jail.NetNSName(ID)); the NICs' TAPs
	// are names inside it (jail.TAP), unless NIC.NetNS names the namespace they are in.
	// Firecracker under its jailer.
	NetNS bool
}

// Backend starts VMs.
type Backend interface {
	Name() string
	Caps() Caps
	Start(ctx context.Context, spec Spec) (Instance, error)
}

// Instance is a running VMM process and the host end of its guest's control channel.
type Instance interface {
	Pid() int
	// Control waits for the guest's control connection (init connects once it is up). It
	// fails when ctx ends, the VMM exits first, or the spec had NoControl.
	Control(ctx context.Context) (net.Conn, error)
	// Wait blocks until the VMM has exited; a guest that ended by rebooting is a nil error.
	Wait() error
	// Shutdown asks the guest to stop (Ctrl-Alt-Del: our init stops its workload, systemd
	// reboots) and waits for the VMM to exit; when ctx ends first it kills the VMM.
	Shutdown(ctx context.Context) error
	// Kill ends the VMM at once (the guest gets no say); Wait still reports the exit.
	Kill() error
}

// ErrNoControl is Control's answer for a guest without a control channel.
var ErrNoControl = errors.New("vmm: this guest has no control channel")

// ProcessTagEnv is set in every VMM process's environment to its VM's directory, so that gc
// finds the processes of its own state directory, and only those.
const ProcessTagEnv = "FIREGOPHER_VM_DIR"
