package vmm

import (
	"context"
	"net"
)

// Snapshotter is a backend that can save a booted guest, parked before it reads its per-VM
// config, as a template, and start new VMs from such a template in a fraction of a boot.
//
// A template is a directory the backend fills; the caller keys, caches and names it. Its
// guest has the spec's kernel, initrd, command line, vCPUs and memory and the devices every
// VM restored from it shares, but no disks and no NICs: Restore attaches the VM's own.
type Snapshotter interface {
	// TemplateID names the backend, its exact version and the device set of its templates:
	// part of a template's key, so a new VMM or device layout never restores an old one.
	TemplateID() (string, error)
	// CanTemplate says why spec cannot be restored from a template (nil: it can).
	CanTemplate(spec Spec) error
	// CreateTemplate boots spec's guest (its Disks and NICs are ignored), calls parked with
	// the guest's control connection (it returns once the guest waits for its config),
	// then saves the guest into dir and ends the VMM. dir also holds the VMM's sockets and
	// console log meanwhile.
	CreateTemplate(ctx context.Context, spec Spec, dir string, parked func(context.Context, net.Conn) error) error
	// Restore starts spec's VM from the template in dir, with its own control channel,
	// console, disks and NICs, and leaves the guest paused where the template was saved:
	// the caller queues the guest's config on the control channel, then resumes it.
	Restore(ctx context.Context, spec Spec, dir string) (Restored, error)
}

// TemplateDeviceSet is a Snapshotter whose templates hold the VM's devices themselves (its
// VMM cannot attach them at a restore): the device set spec needs is then part of the
// template's key.
type TemplateDeviceSet interface {
	TemplateDevices(spec Spec) string
}

// Restored is a VM restored from a template whose guest has not run yet.
type Restored interface {
	Instance
	// Resume lets the guest run. A VMM that resets the control connection at a restore
	// (Firecracker's vsock) resumes the guest in Control already, so that it can connect
	// again; Resume is then a no-op.
	Resume(ctx context.Context) error
}
