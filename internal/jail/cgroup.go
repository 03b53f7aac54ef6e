package jail

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ProcMounts is where the host's mounts are read, as the jailer reads them.
const ProcMounts = "/proc/mounts"

// CgroupMode is how a host mounts its cgroups.
type CgroupMode int

const (
	// CgroupNone: no cgroup file system at all.
	CgroupNone CgroupMode = iota
	// CgroupV1: only v1 hierarchies.
	CgroupV1
	// CgroupV2: the unified hierarchy only (Debian 12, Ubuntu 22.04 and later).
	CgroupV2
	// CgroupHybrid: v1 hierarchies hold the controllers and a cgroup2 mount exists beside
	// them (systemd's "hybrid" layout, often with an empty /sys/fs/cgroup/unified).
	CgroupHybrid
)

func (m CgroupMode) String() string {
	return [...]string{"none", "v1", "v2", "hybrid"}[m]
}

// Cgroups is what the host offers: the mode, the cgroup2 mount (if any) and the v1
// hierarchies by controller.
type Cgroups struct {
	Mode    CgroupMode
	Unified string            // the cgroup2 mount point, "" if none
	V1      map[string]string // controller -> mount point
}

// DetectCgroups reads mounts (ProcMounts, or a test's file) the way the jailer does: the
// first cgroup2 mount is the unified hierarchy, every cgroup (v1) mount lists its
// controllers in its options.
func DetectCgroups(mounts string) (Cgroups, error) {
	f, err := os.Open(mounts)
	if err != nil {
		return Cgroups{}, fmt.Errorf("cgroups: %w", err)
	}
	defer f.Close()
	c := Cgroups{V1: map[string]string{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		dir, fstype, opts := unescapeMount(fields[1]), fields[2], strings.Split(fields[3], ",")
		switch fstype {
		case "cgroup2":
			if c.Unified == "" {
				c.Unified = dir
			}
		case "cgroup":
			for _, o := range opts {
				if knownV1Controllers[o] {
					if _, seen := c.V1[o]; !seen {
						c.V1[o] = dir
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Cgroups{}, fmt.Errorf("cgroups: %s: %w", mounts, err)
	}
	switch {
	case c.Unified != "" && len(c.V1) == 0:
		c.Mode = CgroupV2
	case c.Unified != "":
		c.Mode = CgroupHybrid
	case len(c.V1) > 0:
		c.Mode = CgroupV1
	}
	return c, nil
}

var knownV1Controllers = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "devices": true, "freezer": true,
	"blkio": true, "pids": true, "net_cls": true, "net_prio": true, "perf_event": true, "hugetlb": true,
	"rdma": true, "misc": true,
}

// unescapeMount undoes /proc/mounts' octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Controllers lists the controllers the unified hierarchy offers (its root's
// cgroup.controllers); in hybrid mode the v1 hierarchies usually hold them all.
func (c Cgroups) Controllers() ([]string, error) {
	if c.Unified == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(c.Unified, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	return strings.Fields(string(b)), nil
}

// Limits are one VM's cgroup limits.
type Limits struct {
	MemoryBytes int64 // memory.max: the guest's memory plus VMMOverhead
	CPUs        int   // cpu.max: CPUs full periods per period
	Pids        int   // pids.max: Firecracker's threads (API, VMM, one per vCPU) and slack
}

// VMMOverheadMiB is Firecracker's own memory beyond the guest's (its binary, the API and
// device threads, virtio queues, page tables): tens of MiB, with margin.
const VMMOverheadMiB = 64

// cpuPeriod is cpu.max's period, in microseconds.
const cpuPeriod = 100000

// LimitsFor is the limits of a VM of cpus vCPUs and memMiB MiB of guest memory.
func LimitsFor(cpus, memMiB int) Limits {
	overhead := VMMOverheadMiB + memMiB/32 // page tables and KVM state grow with memory
	return Limits{MemoryBytes: int64(memMiB+overhead) << 20, CPUs: cpus, Pids: 32 + cpus}
}

// DefaultParent is the cgroup every VM's cgroup is made under: <unified>/firegopher/<id>.
const DefaultParent = "firegopher"

// ErrNoLimits is wrapped by CgroupArgs when the host cannot take the limits.
var ErrNoLimits = errors.New("cgroup v2 limits are not available")

// needed are the controllers CgroupArgs writes files of.
var needed = []string{"memory", "cpu", "pids"}

// CgroupArgs is the jailer's cgroup arguments for l: cgroup v2 under parent, with
// memory.max, cpu.max and pids.max. A host without a unified hierarchy offering those
// controllers (v1, or hybrid with an empty cgroup2 mount, whose controllers the v1
// hierarchies hold) is refused with ErrNoLimits: the jailer's v1 support writes v1 files
// the limits here are not written for, and a half-limited VM is worse than a clear "no".
func (c Cgroups) CgroupArgs(parent string, l Limits) ([]string, error) {
	if err := validCgroupName(parent); err != nil {
		return nil, err
	}
	if c.Unified == "" {
		return nil, fmt.Errorf("%w: this host has no cgroup2 hierarchy (%s mode)", ErrNoLimits, c.Mode)
	}
	have, err := c.Controllers()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoLimits, err)
	}
	var missing []string
	for _, n := range needed {
		if !slices.Contains(have, n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		why := ""
		if c.Mode == CgroupHybrid {
			why = " (a hybrid host: the v1 hierarchies hold them; boot with systemd.unified_cgroup_hierarchy=1)"
		}
		return nil, fmt.Errorf("%w: the cgroup2 hierarchy at %s has no %s controller%s", ErrNoLimits, c.Unified, strings.Join(missing, ", "), why)
	}
	return []string{
		"--cgroup-version", "2",
		"--parent-cgroup", parent,
		"--cgroup", "memory.max=" + strconv.FormatInt(l.MemoryBytes, 10),
		"--cgroup", fmt.Sprintf("cpu.max=%d %d", l.CPUs*cpuPeriod, cpuPeriod),
		"--cgroup", "pids.max=" + strconv.Itoa(l.Pids),
	}, nil
}

// NoCgroupArgs is the jailer's cgroup arguments without limits: the version only, since
// the jailer's default (v1) fails on a v2-only host. With v2 and no --cgroup the jailer
// only joins <unified>/<exec name> if it exists.
func (c Cgroups) NoCgroupArgs() []string {
	if c.Unified != "" {
		return []string{"--cgroup-version", "2"}
	}
	return []string{"--cgroup-version", "1"}
}

func validCgroupName(s string) error {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\x00") {
		return fmt.Errorf("cgroup name %q: want one plain path component", s)
	}
	return nil
}

// CgroupDir is the VM's cgroup as the jailer makes it: <unified>/<parent>/<id>.
func (c Cgroups) CgroupDir(parent, id string) string {
	if c.Unified == "" {
		return ""
	}
	return filepath.Join(c.Unified, parent, id)
}

// RemoveCgroup removes the VM's cgroup once it is empty: rmdir answers EBUSY while a
// process is still in it, so it is retried until ctx ends. A cgroup that does not exist is
// not an error. A directory that is not on a cgroup file system (a test's fake cgroupfs,
// where the jailer's writes left plain files) is removed as a tree.
func (c Cgroups) RemoveCgroup(ctx context.Context, parent, id string) error {
	dir := c.CgroupDir(parent, id)
	if dir == "" {
		return nil
	}
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); errors.Is(err, unix.ENOENT) {
			return nil
		} else if err == nil && st.Type != unix.CGROUP2_SUPER_MAGIC && st.Type != unix.CGROUP_SUPER_MAGIC {
			return os.RemoveAll(dir)
		}
		err := unix.Rmdir(dir)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case !errors.Is(err, unix.EBUSY):
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroup %s: still in use: %w", dir, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
