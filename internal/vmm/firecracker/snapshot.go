package firecracker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/operations"

	"github.com/firegopher/firegopher/internal/vmm"
)

// Snapshot templates (vmm.Snapshotter). Firecracker restores a VM only with the devices
// it was saved with, each at the path or name it had (1.16 can rename TAPs and the vsock
// socket at a load, 1.6 cannot; neither can attach a device after one), and a load is
// the first call of a fresh process. So a template holds the VM's whole device set: every
// disk (an empty placeholder of the disk's size and mode behind the same drive) and the
// vsock, and a restore puts the VM's own disks at the template's drive paths:
//
//   - jailed, the paths are in-jail ones (/rootfs, /disk1, /v.sock): every jail has them;
//   - unjailed, they are relative (fcdisk-rootfs, v.sock) and Firecracker runs in the
//     VM's directory, where the VM's disks are linked under those names.
//
// NICs are not in templates yet (CanTemplate refuses them): a template would need the
// TAP's name at the restore, which 1.16 can override (network_overrides) and 1.6 cannot
// (a fixed in-namespace name, tap0, in each VM's own namespace would do).
//
// Firecracker resets every vsock connection when it restores a VM, so the guest's init
// connects its control channel again: a restored instance's Control resumes the guest
// first (Resume is then a no-op), and the config arrives on the new connection.

// Files of a template directory.
const (
	TemplateStateFile  = "snapshot"
	TemplateMemoryFile = "memory"
)

// templateLayout names the device set and the path scheme of templates; change it when
// either changes.
const templateLayout = "disks-vsock-rng-v1"

var _ vmm.Snapshotter = (*Backend)(nil)
var _ vmm.TemplateDeviceSet = (*Backend)(nil)

// TemplateID is the release, jailed or not (the drive paths differ), the host CPU model
// (a snapshot restores on a compatible CPU only) and the template layout.
func (b *Backend) TemplateID() (string, error) {
	v, err := b.version(context.Background())
	if err != nil {
		return "", err
	}
	mode := "unjailed"
	if b.Jailer != nil {
		mode = "jailed"
	}
	return fmt.Sprintf("firecracker-v%s %s cpu=%q %s", v, mode, cpuModel(), templateLayout), nil
}

var cpuModelOnce = sync.OnceValue(func() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
})

func cpuModel() string { return cpuModelOnce() }

// TemplateDevices names spec's disks (size and mode each): a template restores only VMs
// with the same ones.
func (b *Backend) TemplateDevices(spec vmm.Spec) string {
	parts := make([]string, len(spec.Disks))
	for i, d := range spec.Disks {
		size := int64(-1)
		if fi, err := os.Stat(d.Path); err == nil {
			size = fi.Size()
		}
		mode := "rw"
		if d.ReadOnly {
			mode = "ro"
		}
		parts[i] = fmt.Sprintf("%d:%s", size, mode)
	}
	return "disks=" + strings.Join(parts, ",")
}

// CanTemplate: enabled (Templates), our init and its control channel, raw disks, no NICs.
func (b *Backend) CanTemplate(spec vmm.Spec) error {
	switch {
	case !b.Templates:
		return errors.New("firecracker templates are not enabled (init does not reconnect its control channel after a restore yet)")
	case spec.NoControl:
		return errors.New("templates need our init and its control channel")
	case len(spec.Disks) == 0:
		return errors.New("templates need a root disk")
	case len(spec.NICs) > 0:
		return errors.New("firecracker templates hold no NICs yet (a restore would need the template's TAP names)")
	}
	for i, d := range spec.Disks {
		if d.Format != "" && d.Format != "raw" {
			return fmt.Errorf("disk %d: firecracker takes raw disks only, not %s", i, d.Format)
		}
	}
	return nil
}

// snapDiskName is disk i's file name, the same in every VM of a template.
func (b *Backend) snapDiskName(i int) string {
	if b.Jailer != nil {
		return jailDisk(i)
	}
	return "fcdisk-" + jailDisk(i)
}

// snapLaunch prepares the process of a template or restored VM: jailed as Start does
// (the template VM in our network namespace), unjailed in spec.Dir with spec's disks
// linked there under the template's relative names.
func (b *Backend) snapLaunch(ctx context.Context, spec vmm.Spec, v Version, template bool) (*launch, error) {
	if b.Jailer != nil {
		return b.jailed(ctx, spec, v, b.logger().With("vm", spec.ID), !template)
	}
	l := b.unjailed(spec)
	l.dir = spec.Dir
	view := spec
	view.Dir = "." // v.sock and the log FIFOs resolve in l.dir
	view.Disks = append([]vmm.Disk(nil), spec.Disks...)
	var links []string
	l.cleanup = func() {
		for _, p := range links {
			os.Remove(p)
		}
	}
	for i, d := range spec.Disks {
		name := b.snapDiskName(i)
		link := filepath.Join(spec.Dir, name)
		if d.Path != link {
			abs, err := filepath.Abs(d.Path)
			if err == nil {
				os.Remove(link) // a crashed restore's
				err = os.Symlink(abs, link)
			}
			if err != nil {
				l.cleanup()
				return nil, fmt.Errorf("firecracker: disk %d: %w", i, err)
			}
			links = append(links, link)
		}
		view.Disks[i].Path = name
	}
	l.view = view
	l.hostPath = func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(spec.Dir, p)
	}
	return l, nil
}

// CreateTemplate boots spec's guest with placeholder disks, waits until parked says its
// init waits for its config, pauses it and saves it (a Full snapshot) into dir.
func (b *Backend) CreateTemplate(ctx context.Context, spec vmm.Spec, dir string, parked func(context.Context, net.Conn) error) error {
	if err := b.CanTemplate(spec); err != nil {
		return err
	}
	v, err := b.version(ctx)
	if err != nil {
		return err
	}
	spec.Cmdline = b.Cmdline(spec)
	if err := checkKernel(v, spec); err != nil {
		return err
	}
	// Placeholders: sparse, of the disks' sizes, where the jail can link them (its base's
	// file system) or in dir. The guest parks before it reads any disk.
	phDir := dir
	if b.Jailer != nil {
		if phDir, err = filepath.EvalSymlinks(b.Jailer.Base); err != nil {
			return fmt.Errorf("firecracker: jail base: %w", err)
		}
	}
	spec.Disks = append([]vmm.Disk(nil), spec.Disks...)
	for i, d := range spec.Disks {
		fi, err := os.Stat(d.Path)
		if err != nil {
			return fmt.Errorf("firecracker: disk %d: %w", i, err)
		}
		ph := filepath.Join(phDir, fmt.Sprintf(".placeholder-%s-%d", filepath.Base(dir), i))
		if err := os.WriteFile(ph, nil, 0o600); err != nil {
			return err
		}
		defer os.Remove(ph)
		if err := os.Truncate(ph, fi.Size()); err != nil {
			return err
		}
		spec.Disks[i].Path = ph
	}
	spec.Dir = dir
	spec.ConsoleLog = filepath.Join(dir, "console.log")
	log := b.logger().With("vm", spec.ID)
	l, err := b.snapLaunch(ctx, spec, v, true)
	if err != nil {
		return err
	}
	cfg, err := NewConfig(l.view)
	if err != nil {
		l.cleanup()
		return err
	}
	inst, err := b.launch(ctx, spec, l, log)
	if err != nil {
		return err
	}
	defer func() { inst.Kill(); inst.Ended() }()
	api, tr := newAPIClient(l.apiSock)
	defer tr.CloseIdleConnections()
	for _, s := range DefaultSteps() {
		if err := s.Do(ctx, api, cfg); err != nil {
			return fmt.Errorf("firecracker: template: %s: %w", s.Name, err)
		}
	}
	conn, err := inst.Control(ctx)
	if err != nil {
		return fmt.Errorf("template guest: %w", err)
	}
	defer conn.Close()
	if err := parked(ctx, conn); err != nil {
		return fmt.Errorf("template guest: %w", err)
	}
	if err := setState(ctx, api, "Paused"); err != nil {
		return fmt.Errorf("firecracker: template: pause: %w", err)
	}
	snap, mem := b.snapFile(TemplateStateFile), b.snapFile(TemplateMemoryFile)
	p := operations.NewCreateSnapshotParamsWithContext(ctx).WithTimeout(requestTimeout).WithBody(&models.SnapshotCreateParams{
		SnapshotType: models.SnapshotCreateParamsSnapshotTypeFull, SnapshotPath: ptr(snap), MemFilePath: ptr(mem),
	})
	if _, err := api.CreateSnapshot(p); err != nil {
		return fmt.Errorf("firecracker: template: snapshot: %w", apiError(err))
	}
	// Out of the jail before it goes (jailed; Firecracker is paused and done with them),
	// owned by us and readable by the jails of the VMs restored from it, never writable.
	for _, f := range []struct{ inVMM, name string }{{snap, TemplateStateFile}, {mem, TemplateMemoryFile}} {
		src, dst := l.hostPath(f.inVMM), filepath.Join(dir, f.name)
		if src != dst {
			if err := copyOut(src, dst); err != nil {
				return fmt.Errorf("firecracker: template: %w", err)
			}
		}
		if err := os.Chown(dst, os.Getuid(), os.Getgid()); err != nil {
			return err
		}
		if err := os.Chmod(dst, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// snapFile is where Firecracker writes or reads a template file: in-jail, or in its
// working directory.
func (b *Backend) snapFile(name string) string {
	if b.Jailer != nil {
		return "/" + name
	}
	return name
}

// copyOut links src to dst, or copies it across file systems; the caller then takes the
// file from the jail's owner.
func copyOut(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func setState(ctx context.Context, api operations.ClientIface, state string) error {
	p := operations.NewPatchVMParamsWithContext(ctx).WithTimeout(requestTimeout).WithBody(&models.VM{State: ptr(state)})
	_, err := api.PatchVM(p)
	return apiError(err)
}

// Restore starts a fresh Firecracker with spec's disks at the template's drive paths,
// configures its logger and metrics (the only calls allowed before a load) and loads the
// template, paused.
func (b *Backend) Restore(ctx context.Context, spec vmm.Spec, dir string) (vmm.Restored, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := b.CanTemplate(spec); err != nil {
		return nil, err
	}
	v, err := b.version(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range []string{TemplateStateFile, TemplateMemoryFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
	}
	log := b.logger().With("vm", spec.ID)
	l, err := b.snapLaunch(ctx, spec, v, false)
	if err != nil {
		return nil, err
	}
	var snap, mem string
	if snap, err = l.place(filepath.Join(dir, TemplateStateFile), TemplateStateFile); err == nil {
		mem, err = l.place(filepath.Join(dir, TemplateMemoryFile), TemplateMemoryFile)
	}
	if err != nil {
		l.cleanup()
		return nil, fmt.Errorf("restore: %w", err)
	}
	cfg, err := NewConfig(l.view)
	if err != nil {
		l.cleanup()
		return nil, err
	}
	inst, err := b.launch(ctx, spec, l, log)
	if err != nil {
		return nil, err
	}
	api, tr := newAPIClient(l.apiSock)
	defer tr.CloseIdleConnections()
	err = putLogger(ctx, api, cfg)
	if err == nil {
		err = putMetrics(ctx, api, cfg)
	}
	if err == nil {
		p := operations.NewLoadSnapshotParamsWithContext(ctx).WithTimeout(requestTimeout).WithBody(&models.SnapshotLoadParams{
			SnapshotPath: ptr(snap),
			MemBackend:   &models.MemoryBackend{BackendType: ptr(models.MemoryBackendBackendTypeFile), BackendPath: ptr(mem)},
		})
		_, err = api.LoadSnapshot(p)
		err = apiError(err)
	}
	if err != nil {
		inst.Kill()
		inst.Ended()
		return nil, fmt.Errorf("firecracker: restore: %w%s", err, consoleTail(spec.ConsoleLog, LogPath(spec)))
	}
	return &restored{instance: inst}, nil
}

// restored is a Firecracker that loaded a template and has not run its guest yet.
type restored struct {
	*instance
	mu      sync.Mutex
	resumed bool
}

// Resume lets the guest run (once; later calls do nothing).
func (r *restored) Resume(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.resumed {
		return nil
	}
	api, tr := newAPIClient(r.sock)
	defer tr.CloseIdleConnections()
	if err := setState(ctx, api, "Resumed"); err != nil {
		return fmt.Errorf("firecracker: resume: %w", err)
	}
	r.resumed = true
	return nil
}

// Control resumes the guest first: its control connection was reset by the restore and
// only a running guest connects again.
func (r *restored) Control(ctx context.Context) (net.Conn, error) {
	if err := r.Resume(ctx); err != nil {
		return nil, err
	}
	return r.instance.Control(ctx)
}
