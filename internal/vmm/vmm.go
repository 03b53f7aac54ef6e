// Package vmm is the seam between a VM's lifecycle and the monitor that runs it. Backends
// (qemu here; firecracker next) turn a Spec into a running process and nothing more:
// assets, disks, the initrd and the control channel's far end are prepared by the caller.
package vmm

import (
	"context"
	"fmt"
)

// Disk is a raw disk image attached as virtio-blk.
type Disk struct {
	Path string
	// Serial is what the guest sees as the disk's virtio serial; init finds its root by it.
	Serial   string
	ReadOnly bool
}

// NIC is a virtio-net interface backed by an existing TAP device on the host.
type NIC struct {
	TAP string
	MAC string
}

// Spec is one VM to start. Paths are absolute.
type Spec struct {
	ID        string
	CPUs      int
	MemoryMiB int
	Kernel    string // ELF vmlinux
	Initrd    string
	Cmdline   string
	Disks     []Disk
	NICs      []NIC
	// ControlSocket is a Unix socket the caller listens on; the VMM connects the guest's
	// control port (virtio-serial or vsock) to it.
	ControlSocket string
	// ConsoleLog receives the guest's serial console.
	ConsoleLog string
}

// Validate checks what every backend relies on.
func (s Spec) Validate() error {
	switch {
	case s.ID == "":
		return fmt.Errorf("vmm: id: empty")
	case s.CPUs < 1:
		return fmt.Errorf("vmm: cpus: %d, want at least 1", s.CPUs)
	case s.MemoryMiB < 64:
		return fmt.Errorf("vmm: memory: %d MiB, want at least 64", s.MemoryMiB)
	case s.Kernel == "":
		return fmt.Errorf("vmm: kernel: empty")
	case len(s.Disks) == 0:
		return fmt.Errorf("vmm: disks: none")
	case s.ControlSocket == "":
		return fmt.Errorf("vmm: control socket: empty")
	}
	return nil
}

// Backend starts VMs.
type Backend interface {
	Name() string
	Start(ctx context.Context, spec Spec) (Instance, error)
}

// Instance is a running VMM process.
type Instance interface {
	Pid() int
	// Wait blocks until the VMM has exited; a guest power-off is a nil error.
	Wait() error
	// Kill ends the VMM at once (the guest gets no say); Wait still reports the exit.
	Kill() error
}
