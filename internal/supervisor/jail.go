package supervisor

import (
	"context"
	"path/filepath"
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
