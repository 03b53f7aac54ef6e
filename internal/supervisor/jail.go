package supervisor

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/kernel"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmm"
)

// Jails are the jails a jailed backend (Firecracker under its jailer) keeps for its VMs,
// by VM id: what gc lists and reclaims once a VM's supervisor is gone.
type Jails interface {
	// Jails lists the ids of the VMs that have anything of a jail.
	Jails() ([]string, error)
	// Reclaim kills VM id's jailed processes and removes its jail; safe to repeat.
	Reclaim(ctx context.Context, id string) error
}

// JailBase is the jails' chroot base: under the state directory, so that a VM's disk is
// hard-linked into its chroot, and so that gc only ever touches this state directory's.
func (h *Host) JailBase() string { return filepath.Join(h.StateDir, "jail") }

// JailDB is the jail owners' allocation database.
func (h *Host) JailDB() string { return filepath.Join(h.StateDir, "jail.db") }

// checkKernel asks m's backend, when it can tell (vmm.KernelChecker), whether it can give
// m's kernel its devices, so that the user hears it before any VM state exists. A foreign
// machine boots its image's own initrd, which Start checks. It returns the backend it
// built (nil if none), for the start that follows: building one can run the VMM (its
// --version).
func (h *Host) checkKernel(m *spec.Machine) (vmm.Backend, error) {
	if m.Mode == spec.ModeForeign || h.Backend == nil {
		return nil, nil
	}
	b, err := h.Backend(m.VMM)
	if err != nil {
		return nil, err
	}
	return b, h.checkKernelOf(b, m)
}

func (h *Host) checkKernelOf(b vmm.Backend, m *spec.Machine) error {
	kc, ok := b.(vmm.KernelChecker)
	if !ok {
		return nil
	}
	store, err := h.Store()
	if err != nil {
		return err
	}
	k, err := store.LoadKernel(assets.Digest(m.Assets.Kernel))
	if err != nil {
		return err
	}
	var mmio []byte
	for _, mod := range k.Modules {
		if kernel.Name(path.Base(mod.Path)) == "virtio_mmio" {
			if mmio, err = os.ReadFile(store.Path(mod.Digest)); err != nil {
				return fmt.Errorf("kernel module %s: %w", mod.Path, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return kc.CheckKernel(ctx, store.Path(k.Vmlinux), mmio)
}

// VMNetNS is Jailer.NetNS for a Host's VMs: the network namespace create-tap made for VM
// id (jail.NetNSPath), or "" when it has none (no network): the jailer is then not asked
// to join a namespace that does not exist.
func VMNetNS(id string) string {
	p := jail.NetNSPath(id)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}
