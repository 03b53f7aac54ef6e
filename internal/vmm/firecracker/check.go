package firecracker

import "context"

// CheckKernel refuses, before anything is made for a VM, a guest kernel this release
// cannot give devices to (see the package function CheckKernel): vmm.KernelChecker.
func (b *Backend) CheckKernel(ctx context.Context, vmlinux string, mmioModule []byte) error {
	v, err := b.version(ctx)
	if err != nil {
		return err
	}
	return CheckKernel(v, vmlinux, mmioModule)
}
