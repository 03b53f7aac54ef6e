package backends

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker"
)

// Environment of the Firecracker backend.
const (
	// FirecrackerVersionEnv picks an installed release; unset means the newest.
	FirecrackerVersionEnv = "FIREGOPHER_FIRECRACKER_VERSION"
	// CgroupLimitsEnv: "" or "required" refuses a VM the host cannot give cgroup v2
	// limits; "if-available" runs it without them (cgroup v1 and hybrid hosts).
	CgroupLimitsEnv = "FIREGOPHER_CGROUP_LIMITS"
	// JailIDsEnv moves the jails' uid/gid range, FIRST:COUNT (default jail.DefaultRange):
	// for a host where another tool hands out those ids, or tests running side by side.
	JailIDsEnv = "FIREGOPHER_JAIL_IDS"
)

// jailIDs reads JailIDsEnv.
func jailIDs() (jail.Range, error) {
	v := os.Getenv(JailIDsEnv)
	if v == "" {
		return jail.DefaultRange, nil
	}
	first, count, ok := strings.Cut(v, ":")
	f, ferr := strconv.Atoi(first)
	c, cerr := strconv.Atoi(count)
	if !ok || ferr != nil || cerr != nil {
		return jail.Range{}, fmt.Errorf("%s: %q, want FIRST:COUNT like %d:%d", JailIDsEnv, v, jail.DefaultRange.First, jail.DefaultRange.Count)
	}
	r := jail.Range{First: f, Count: c}
	if err := r.Validate(); err != nil {
		return jail.Range{}, fmt.Errorf("%s: %w", JailIDsEnv, err)
	}
	return r, nil
}

// newestFirecracker is the version of the release the firecracker backend would run, ""
// when none is installed.
func newestFirecracker(h *supervisor.Host) string {
	store, err := h.Store()
	if err != nil {
		return ""
	}
	if v := os.Getenv(FirecrackerVersionEnv); v != "" {
		if _, err := store.LoadFirecracker(strings.TrimPrefix(v, "v")); err != nil {
			return ""
		}
		return strings.TrimPrefix(v, "v")
	}
	list, err := store.Firecrackers()
	if err != nil || len(list) == 0 {
		return ""
	}
	return list[0].Version
}

// cgroupPolicy reads CgroupLimitsEnv.
func cgroupPolicy() (firecracker.CgroupPolicy, error) {
	switch v := os.Getenv(CgroupLimitsEnv); v {
	case "", "required":
		return firecracker.CgroupLimits, nil
	case "if-available":
		return firecracker.CgroupLimitsIfAvailable, nil
	default:
		return 0, fmt.Errorf("%s: %q, want required or if-available", CgroupLimitsEnv, v)
	}
}

// firecrackerBackend is the jailed Firecracker of the selected installed release.
func firecrackerBackend(h *supervisor.Host) (vmm.Backend, error) {
	store, err := h.Store()
	if err != nil {
		return nil, err
	}
	version := strings.TrimPrefix(os.Getenv(FirecrackerVersionEnv), "v")
	if version == "" {
		list, err := store.Firecrackers()
		if err != nil {
			return nil, err
		}
		if len(list) == 0 {
			return nil, fmt.Errorf("vmm firecracker: no Firecracker release is installed in %s: run firegopher firecracker install", h.StateDir)
		}
		version = list[0].Version
	}
	rel, err := store.LoadFirecracker(version)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", FirecrackerVersionEnv, err)
	}
	policy, err := cgroupPolicy()
	if err != nil {
		return nil, err
	}
	if policy == firecracker.CgroupLimits {
		// Refused here, before any VM is made, rather than by every jailed start.
		cg, err := jail.DetectCgroups(jail.ProcMounts)
		if err == nil {
			_, err = cg.CgroupArgs(jail.DefaultParent, jail.LimitsFor(1, 128))
		}
		if err != nil {
			return nil, fmt.Errorf("firecracker: %w; set %s=if-available to run VMs without cgroup limits", err, CgroupLimitsEnv)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := firecracker.New(ctx, store.Path(rel.Firecracker))
	if err != nil {
		return nil, err
	}
	jr, err := hostJailer(h)
	if err != nil {
		return nil, err
	}
	jr.Binary, jr.Cgroups, jr.NetNS = store.Path(rel.Jailer), policy, supervisor.VMNetNS
	// Snapshot templates: a run asks for them unless --no-snapshot; init reconnects its
	// vsock channel after the restore (guest.AwaitConfig).
	b.Jailer, b.Logger, b.Templates = jr, h.Log, true
	return b, nil
}

// hostJailer is the jailer configuration of h's state directory, without a binary: enough
// for gc to list and reclaim jails.
func hostJailer(h *supervisor.Host) (*firecracker.Jailer, error) {
	if err := os.MkdirAll(h.JailBase(), 0o755); err != nil {
		return nil, err
	}
	ids, err := jailIDs()
	if err != nil {
		return nil, err
	}
	owners, err := jail.OpenAllocator(h.JailDB(), ids)
	if err != nil {
		return nil, err
	}
	return &firecracker.Jailer{Base: h.JailBase(), Owners: owners}, nil
}

// firecrackerJails is what gc reclaims jails with: only once any VM was jailed here.
func firecrackerJails(h *supervisor.Host) (supervisor.Jails, error) {
	if _, err := os.Stat(h.JailDB()); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return hostJailer(h)
}
