package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/vmm"
)

// Jailer runs each VM's Firecracker under the jailer: in a chroot of its own, as a uid and
// gid of its own, in a PID namespace of its own (still our child), in a cgroup with limits.
type Jailer struct {
	Binary string // the jailer of Firecracker's release
	// Version is Binary's release; zero means it is read at the first Start. It must be
	// Firecracker's: both come from one release tarball.
	Version Version
	// Base is --chroot-base-dir; chroots are <Base>/firecracker/<id>/root. It must be on
	// the file system of the VMs' directories (STATE_DIR/jail), so that the VM's disk is
	// linked, not copied, into its chroot.
	Base string
	// Owners hands out each VM's uid and gid.
	Owners *jail.Allocator
	// Mounts is where the cgroup hierarchies are read; "" means /proc/mounts.
	Mounts string
	// CgroupParent is the cgroup VMs' cgroups are made in; "" means jail.DefaultParent.
	CgroupParent string
	// Cgroups says what to do about limits.
	Cgroups CgroupPolicy
	// NoFile is --resource-limit no-file; 0 keeps the jailer's 2048.
	NoFile int
	// NetNS names the network namespace VM id's Firecracker joins (jail.NetNSPath, made by
	// jail.CreateNetNS); nil or "" for none. The spec's TAPs are looked for in it, and are
	// given to the jail's owner before the jailer starts. A NIC that names its own
	// namespace (vmm.NIC.NetNS: a pod's) is looked for there instead, and Firecracker joins
	// that one; its TAP is given back to root when the VM ends, and neither is removed.
	NetNS func(id string) string

	versionMu sync.Mutex // guards Version's detection
}

// version is the jailer's release, read once, checked against the tested range and fc's.
func (jr *Jailer) version(ctx context.Context, fc Version) error {
	jr.versionMu.Lock()
	defer jr.versionMu.Unlock()
	if jr.Version.IsZero() {
		v, err := ReadVersion(ctx, jr.Binary, "Jailer")
		if err != nil {
			return err
		}
		jr.Version = v
	}
	if err := CheckTested("jailer", jr.Version); err != nil {
		return err
	}
	if jr.Version != fc {
		return fmt.Errorf("firecracker: jailer v%s and firecracker v%s come from different releases", jr.Version, fc)
	}
	return nil
}

// CgroupPolicy says whether a VM runs without cgroup limits when the host cannot give
// cgroup v2 ones.
type CgroupPolicy int

const (
	// CgroupLimits: memory (guest + overhead), CPU and pids limits in cgroup v2, or Start
	// refuses with the reason (v1 or hybrid host).
	CgroupLimits CgroupPolicy = iota
	// CgroupLimitsIfAvailable: limits when the host has them, else none (logged).
	CgroupLimitsIfAvailable
	// CgroupNoLimits: never limits.
	CgroupNoLimits
)

// In-jail paths: every API body names these, never a host path.
const (
	jailAPISocket = "/" + APISocketName
	jailVsock     = "/" + VsockSocketName
	jailKernel    = "vmlinux"
	jailInitrd    = "initrd"
	jailRootDisk  = "rootfs"
)

// jailDisk is the in-jail name of disk i.
func jailDisk(i int) string {
	if i == 0 {
		return jailRootDisk
	}
	return "disk" + strconv.Itoa(i)
}

// launch is how one VM's Firecracker is started and what it sees.
type launch struct {
	path     string
	args     []string
	newPIDNS bool
	// view is the spec with the paths Firecracker sees (in-jail ones when jailed).
	view vmm.Spec
	// Host paths of Firecracker's API socket, its vsock socket and our control listener.
	apiSock, vsock, control string
	// Host paths of the logger's and the metrics' FIFOs.
	logFIFO, metricsFIFO string
	// own gives a file the host made for Firecracker (control listener, FIFOs) to the
	// jail's owner (nil: unjailed).
	own func(hostPath string) error
	// cleanup undoes the preparation once Firecracker has exited (or failed to start).
	cleanup func()
	// dir is Firecracker's working directory ("": ours); hostPath is the host path of a
	// path Firecracker is given, place makes a host file available to it (snapshots).
	dir      string
	hostPath func(string) string
	place    func(src, name string) (string, error)
}

func (b *Backend) unjailed(spec vmm.Spec) *launch {
	return &launch{
		path: b.Binary, args: []string{"--api-sock", APISocketPath(spec)}, view: spec,
		apiSock: APISocketPath(spec), vsock: VsockPath(spec), control: ControlPath(spec),
		logFIFO: LogFIFOPath(spec), metricsFIFO: MetricsFIFOPath(spec),
		cleanup:  func() {},
		hostPath: func(p string) string { return p },
		place:    func(src, _ string) (string, error) { return src, nil },
	}
}

// jailed prepares spec's jail: owner, chroot with the VM's files, cgroup arguments. On
// error nothing of it is left.
// joinNetNS false keeps Firecracker in our network namespace (a template VM: no NICs, and
// its id has no namespace of its own).
func (b *Backend) jailed(ctx context.Context, spec vmm.Spec, fcVersion Version, log *slog.Logger, joinNetNS bool) (l *launch, err error) {
	jr := b.Jailer
	if jr.Owners == nil || jr.Base == "" || jr.Binary == "" {
		return nil, errors.New("firecracker: jailer: binary, base and owners are required")
	}
	if err := jr.version(ctx, fcVersion); err != nil {
		return nil, err
	}
	if err := jail.ValidateID(spec.ID); err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	// The jailer canonicalizes its base: so must the paths we place files at.
	base, err := filepath.EvalSymlinks(jr.Base)
	if err != nil {
		return nil, fmt.Errorf("firecracker: jail base: %w", err)
	}
	mounts := jr.Mounts
	if mounts == "" {
		mounts = jail.ProcMounts
	}
	cgroups, err := jail.DetectCgroups(mounts)
	if err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	parent := jr.CgroupParent
	if parent == "" {
		parent = jail.DefaultParent
	}
	cgArgs, limited := cgroups.NoCgroupArgs(), false
	if jr.Cgroups != CgroupNoLimits {
		args, err := cgroups.CgroupArgs(parent, jail.LimitsFor(spec.CPUs, spec.MemoryMiB))
		switch {
		case err == nil:
			cgArgs, limited = args, true
		case jr.Cgroups == CgroupLimits:
			return nil, fmt.Errorf("firecracker: %w", err)
		default:
			log.Warn("running without cgroup limits", "error", err)
		}
	}
	execFile, err := jail.ExecFile(base, b.Binary, "v"+fcVersion.String())
	if err != nil {
		return nil, err
	}
	owner, err := jr.Owners.Allocate(spec.ID)
	if err != nil {
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	j := &jail.Jail{Base: base, ExecFile: execFile, ID: spec.ID, Owner: owner}
	cleanup := func() {
		if limited {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := cgroups.RemoveCgroup(ctx, parent, spec.ID); err != nil {
				log.Error("remove the VM's cgroup", "error", err)
			}
			cancel()
		}
		if err := j.Remove(); err != nil {
			log.Error("remove the jail", "error", err)
		}
		if err := jr.Owners.Release(spec.ID); err != nil {
			log.Error("release the jail's owner", "error", err)
		}
	}
	if err := j.Create(); err != nil {
		// A stale jail is not ours to remove here: gc decides it is dead first.
		if !errors.Is(err, jail.ErrStale) {
			cleanup()
		}
		return nil, err
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	var ownNetNS string
	if jr.NetNS != nil && joinNetNS {
		ownNetNS = jr.NetNS(spec.ID)
	}
	netnsPath, foreign, err := nicNetNS(spec.NICs, ownNetNS)
	if err != nil {
		return nil, err
	}
	if foreign {
		// The TAPs are someone else's (a pod's) and outlive the jail: they are handed back
		// to root when it goes, never deleted (nor is their namespace).
		jailCleanup := cleanup
		cleanup = func() {
			for _, n := range spec.NICs {
				if err := jail.ReturnTAP(netnsPath, n.TAP); err != nil {
					log.Error("give the TAP back to root", "tap", n.TAP, "netns", netnsPath, "error", err)
				}
			}
			jailCleanup()
		}
	}
	for _, n := range spec.NICs {
		if err := jail.SetTAPOwner(netnsPath, n.TAP, owner); err != nil {
			return nil, fmt.Errorf("firecracker: NIC %s: %w", n.TAP, err)
		}
	}
	view := spec
	view.Dir = "/"
	if view.Kernel, err = j.Place(spec.Kernel, jailKernel, jail.Shared); err != nil {
		return nil, err
	}
	if spec.Initrd != "" {
		if view.Initrd, err = j.Place(spec.Initrd, jailInitrd, jail.Shared); err != nil {
			return nil, err
		}
	}
	view.Disks = append([]vmm.Disk(nil), spec.Disks...)
	for i, d := range spec.Disks {
		kind := jail.Owned
		if d.ReadOnly {
			kind = jail.Shared
		}
		if view.Disks[i].Path, err = j.Place(d.Path, jailDisk(i), kind); err != nil {
			return nil, err
		}
	}
	return &launch{
		path: jr.Binary,
		args: j.JailerArgs(jail.Args{
			Cgroup: cgArgs, NoFile: jr.NoFile, NetNS: netnsPath,
			Firecracker: []string{"--api-sock", jailAPISocket},
		}),
		newPIDNS:    true,
		view:        view,
		apiSock:     j.HostPath(jailAPISocket),
		vsock:       j.HostPath(jailVsock),
		control:     fmt.Sprintf("%s_%d", j.HostPath(jailVsock), ControlVsockPort),
		logFIFO:     j.HostPath(LogFIFOPath(view)),
		metricsFIFO: j.HostPath(MetricsFIFOPath(view)),
		own: func(hostPath string) error {
			if err := os.Lchown(hostPath, owner.UID, owner.GID); err != nil {
				return fmt.Errorf("firecracker: %w", err)
			}
			return nil
		},
		cleanup:  cleanup,
		hostPath: j.HostPath,
		place:    func(src, name string) (string, error) { return j.Place(src, name, jail.Shared) },
	}, nil
}

// nicNetNS is the network namespace a jailed VM's Firecracker joins to open its NICs'
// TAPs: the one they name (NIC.NetNS: a pod's, foreign says so), else own, the VM's own
// (Jailer.NetNS; "" for none), which a VM without NICs joins too. The jailer joins one namespace: NICs in two are refused,
// and so is a NIC with no namespace to find its TAP in (Firecracker could open a TAP in
// ours, but only one that any uid may attach to).
func nicNetNS(nics []vmm.NIC, own string) (path string, foreign bool, err error) {
	if len(nics) == 0 {
		return own, false, nil
	}
	for _, n := range nics {
		ns := n.NetNS
		if ns == "" {
			ns = own
		}
		switch {
		case ns == "":
			return "", false, fmt.Errorf("firecracker: NIC %s: a jailed VM's TAP lives in a network namespace the jailer joins, and it has none", n.TAP)
		case path != "" && ns != path:
			return "", false, fmt.Errorf("firecracker: NIC %s: its TAP is in network namespace %s, another NIC's in %s: a jailed VM joins one", n.TAP, ns, path)
		}
		path = ns
		foreign = foreign || n.NetNS != ""
	}
	if foreign && own != "" && own != path {
		return "", false, fmt.Errorf("firecracker: NICs in network namespace %s, and the VM has one of its own, %s: a jailed VM joins one", path, own)
	}
	return path, foreign, nil
}

// Jails lists the ids of every VM this jailer has something of: an owner allocated or a
// chroot under Base. gc compares it with the VMs it knows alive and Reclaims the rest.
func (jr *Jailer) Jails() ([]string, error) {
	seen := map[string]bool{}
	var ids []string
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	list, err := jr.Owners.List()
	if err != nil {
		return nil, err
	}
	for _, al := range list {
		add(al.ID)
	}
	base, err := filepath.EvalSymlinks(jr.Base)
	if errors.Is(err, os.ErrNotExist) {
		return ids, nil
	}
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(base, jail.ExecName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		if e.IsDir() && jail.ValidateID(e.Name()) == nil {
			add(e.Name())
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Reclaim removes everything of VM id's jail after a crash (ours or the VM's): it kills
// the jail's processes (a jailed Firecracker outlives its supervisor: setuid cleared its
// parent-death signal) and waits for them to go, then removes its cgroup and chroot and
// releases its owner. Call it only for a VM known not to be running under a live
// supervisor. Safe to repeat.
func (jr *Jailer) Reclaim(ctx context.Context, id string) error {
	if err := jail.ValidateID(id); err != nil {
		return err
	}
	base, err := filepath.EvalSymlinks(jr.Base)
	if err != nil {
		return fmt.Errorf("firecracker: jail base: %w", err)
	}
	al, held, err := jr.Owners.Lookup(id)
	if err != nil {
		return err
	}
	j := &jail.Jail{Base: base, ExecFile: jail.ExecName, ID: id, Owner: al.Owner}
	if held {
		if err := killAll(ctx, "/proc", al.Owner); err != nil {
			return err
		}
	}
	mounts := jr.Mounts
	if mounts == "" {
		mounts = jail.ProcMounts
	}
	if cgroups, err := jail.DetectCgroups(mounts); err == nil {
		parent := jr.CgroupParent
		if parent == "" {
			parent = jail.DefaultParent
		}
		if err := cgroups.RemoveCgroup(ctx, parent, id); err != nil {
			return err
		}
	}
	if err := j.Remove(); err != nil {
		return err
	}
	return jr.Owners.Release(id)
}

// killAll SIGKILLs owner's processes until none is left or ctx ends.
func killAll(ctx context.Context, procRoot string, owner jail.Owner) error {
	for {
		n, err := jail.Kill(procRoot, owner)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("firecracker: processes of uid %d survive SIGKILL: %w", owner.UID, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
