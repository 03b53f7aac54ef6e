package vmm

import (
	"context"
	"fmt"
)

// Backend names a machine's VMM field selects.
const (
	QEMU        = "qemu"
	Firecracker = "firecracker"
)

// DefaultBackend picks the backend of a machine that names none: Firecracker when KVM
// really works here (kvmErr nil) and a Firecracker release is installed (release, "" for
// none), else QEMU, which also runs without KVM (TCG). why is one line for the log.
func DefaultBackend(kvmErr error, release string) (name, why string) {
	switch {
	case kvmErr != nil:
		return QEMU, fmt.Sprintf("KVM is not usable (%v): QEMU runs without it", kvmErr)
	case release == "":
		return QEMU, "no Firecracker release is installed (firegopher firecracker install)"
	default:
		return Firecracker, fmt.Sprintf("KVM works and Firecracker v%s is installed", release)
	}
}

// KernelChecker is a backend that can tell, before anything is made for a VM, that it
// cannot give a guest kernel its devices (Firecracker < 1.8 and a kernel without
// virtio_mmio.device=). mmioModule is the guest's virtio_mmio.ko, nil when built in.
type KernelChecker interface {
	CheckKernel(ctx context.Context, vmlinux string, mmioModule []byte) error
}
