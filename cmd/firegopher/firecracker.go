package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/vmm"
	"github.com/firegopher/firegopher/internal/vmm/firecracker"
	"github.com/firegopher/firegopher/internal/vmm/qemu"
)

func newFirecrackerCommand(g *globalFlags) *cobra.Command {
	fc := &cobra.Command{Use: "firecracker", Short: "Manage Firecracker releases in the cache"}
	var version, from, sum string
	install := &cobra.Command{
		Use:   "install",
		Short: "Fetch a Firecracker release (firecracker + jailer), check its checksum, cache it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := assets.ValidateFirecrackerVersion(version)
			if err != nil {
				return err
			}
			store, err := g.store()
			if err != nil {
				return err
			}
			tgz := from
			if tgz == "" {
				tmp, err := store.TempDir("firecracker-*")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				if tgz, sum, err = assets.DownloadFirecracker(cmd.Context(), v, tmp); err != nil {
					return err
				}
			}
			d, f, err := store.ImportFirecracker(tgz, v, sum)
			if err != nil {
				return err
			}
			fmt.Printf("firecracker/v%s %s\n  firecracker %s\n  jailer      %s\n", f.Version, d, store.Path(f.Firecracker), store.Path(f.Jailer))
			return nil
		},
	}
	install.Flags().StringVar(&version, "version", assets.DefaultFirecrackerVersion, "release version")
	install.Flags().StringVar(&from, "from", "", "install from a release tarball already on disk (hosts without internet)")
	install.Flags().StringVar(&sum, "sha256", "", "expected SHA-256 of the --from tarball")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the installed Firecracker releases, newest first (the newest is used)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			store, err := g.store()
			if err != nil {
				return err
			}
			list, err := store.Firecrackers()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VERSION\tFIRECRACKER\tJAILER\tSOURCE")
			for _, f := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", f.Version, f.Firecracker.Short(), f.Jailer.Short(), f.Source)
			}
			return w.Flush()
		},
	}
	fc.AddCommand(install, ls)
	return fc
}

// Environment of the Firecracker backend.
const (
	// firecrackerVersionEnv picks an installed release; unset means the newest.
	firecrackerVersionEnv = "FIREGOPHER_FIRECRACKER_VERSION"
	// cgroupLimitsEnv: "" or "required" refuses a VM the host cannot give cgroup v2
	// limits; "if-available" runs it without them (cgroup v1 and hybrid hosts).
	cgroupLimitsEnv = "FIREGOPHER_CGROUP_LIMITS"
	// jailIDsEnv moves the jails' uid/gid range, FIRST:COUNT (default jail.DefaultRange):
	// for a host where another tool hands out those ids, or tests running side by side.
	jailIDsEnv = "FIREGOPHER_JAIL_IDS"
)

// jailIDs reads jailIDsEnv.
func jailIDs() (jail.Range, error) {
	v := os.Getenv(jailIDsEnv)
	if v == "" {
		return jail.DefaultRange, nil
	}
	first, count, ok := strings.Cut(v, ":")
	f, ferr := strconv.Atoi(first)
	c, cerr := strconv.Atoi(count)
	if !ok || ferr != nil || cerr != nil {
		return jail.Range{}, fmt.Errorf("%s: %q, want FIRST:COUNT like %d:%d", jailIDsEnv, v, jail.DefaultRange.First, jail.DefaultRange.Count)
	}
	r := jail.Range{First: f, Count: c}
	if err := r.Validate(); err != nil {
		return jail.Range{}, fmt.Errorf("%s: %w", jailIDsEnv, err)
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
	if v := os.Getenv(firecrackerVersionEnv); v != "" {
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

// kvmError says why KVM cannot run guests here (qemu's probe: vmx/svm and an answering
// /dev/kvm), nil when it can.
func kvmError() error {
	if qemu.ProbeAccel("/proc/cpuinfo", "/dev/kvm") != qemu.AccelKVM {
		return errors.New("no vmx/svm CPU flag, or /dev/kvm does not answer")
	}
	return nil
}

// cgroupPolicy reads cgroupLimitsEnv.
func cgroupPolicy() (firecracker.CgroupPolicy, error) {
	switch v := os.Getenv(cgroupLimitsEnv); v {
	case "", "required":
		return firecracker.CgroupLimits, nil
	case "if-available":
		return firecracker.CgroupLimitsIfAvailable, nil
	default:
		return 0, fmt.Errorf("%s: %q, want required or if-available", cgroupLimitsEnv, v)
	}
}

// firecrackerBackend is the jailed Firecracker of the selected installed release.
func firecrackerBackend(h *supervisor.Host) (vmm.Backend, error) {
	store, err := h.Store()
	if err != nil {
		return nil, err
	}
	version := strings.TrimPrefix(os.Getenv(firecrackerVersionEnv), "v")
	if version == "" {
		list, err := store.Firecrackers()
		if err != nil {
			return nil, err
		}
		if len(list) == 0 {
			return nil, errors.New("--vmm firecracker: no Firecracker release is installed: run firegopher firecracker install")
		}
		version = list[0].Version
	}
	rel, err := store.LoadFirecracker(version)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", firecrackerVersionEnv, err)
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
			return nil, fmt.Errorf("firecracker: %w; set %s=if-available to run VMs without cgroup limits", err, cgroupLimitsEnv)
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
	b.Jailer, b.Logger = jr, h.Log
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
