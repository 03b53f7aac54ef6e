package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/firegopher/firegopher/internal/vmm"
)

// Snapshot templates (vmm.Snapshotter) on q35: the template guest boots with every device a
// restored VM shares (RNG, virtio-serial control port, the root disk's virtio-blk device on
// an empty placeholder of the root's size) and empty PCIe root ports; a restore starts QEMU
// with the same command line but the VM's own root disk behind that device (a migration
// never carries a disk's backing, only the device's state), loads the saved state,
// hot-plugs the VM's other disks and its NICs into the root ports and only then lets the
// guest run. The root disk is there from the first instruction: no hot-plug to wait for.
// QEMU 7.2 (Debian 12) has no file: migration URI: the state file is passed to QEMU as a
// descriptor (QMP getfd) and migrated through fd:.

// TemplateFile is the saved guest in a template directory.
const TemplateFile = "state.mig"

// templatePorts is how many disks besides the root and NICs together a restored VM can have.
const templatePorts = 8

// placeholderFile is the template's root disk while it boots: sparse, never read beyond
// the kernel's partition scan, removed once the template is saved.
const placeholderFile = "root.placeholder"

// templateLayout names the template's device set; change it whenever templateArgs changes
// what the guest sees, so that old templates are never restored into a new layout.
const templateLayout = "q35-rng-vser-root-rp8-v2"

// migrateTimeout bounds saving or loading a template.
const migrateTimeout = 2 * time.Minute

var _ vmm.Snapshotter = (*Backend)(nil)

var qemuVersion struct {
	once sync.Once
	v    string
	err  error
}

// TemplateID is the accelerator, QEMU's exact version line and the template device set.
func (b *Backend) TemplateID() (string, error) {
	qemuVersion.once.Do(func() {
		out, err := exec.Command(b.Path, "-version").Output()
		if err != nil {
			qemuVersion.err = fmt.Errorf("%s -version: %w", b.Path, err)
			return
		}
		qemuVersion.v, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	})
	if qemuVersion.err != nil {
		return "", qemuVersion.err
	}
	return fmt.Sprintf("qemu-%s %s %s", b.Accel, qemuVersion.v, templateLayout), nil
}

// CanTemplate: q35 (TCG) guests with our control channel and few enough disks and NICs.
// microvm has no PCI bus to hot-plug into.
func (b *Backend) CanTemplate(spec vmm.Spec) error {
	switch {
	case b.Accel != AccelTCG || spec.MMIO:
		return errors.New("templates need q35 (TCG): microvm has no bus to hot-plug disks into")
	case spec.NoControl:
		return errors.New("templates need our init and its control channel")
	case len(spec.Disks) == 0:
		return errors.New("templates need a root disk")
	case len(spec.Disks)-1+len(spec.NICs) > templatePorts:
		return fmt.Errorf("templates have %d ports for volumes and NICs, this VM needs %d", templatePorts, len(spec.Disks)-1+len(spec.NICs))
	}
	return nil
}

// templateArgs is the command line of a template and of every VM restored from it: the
// same devices in the same order, the root disk only, templatePorts empty root ports.
func (b *Backend) templateArgs(spec vmm.Spec) []string {
	spec.Disks, spec.NICs = spec.Disks[:1], nil
	args := b.Args(spec)
	for i := 0; i < templatePorts; i++ {
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=%s,chassis=%d,slot=%d", rootPort(i), i+1, i+1))
	}
	return args
}

func rootPort(i int) string { return fmt.Sprintf("rp%d", i) }

// CreateTemplate boots the template guest, waits until parked says it waits for its
// config, and saves it (stopped, then one pass of its memory) into dir/TemplateFile.
func (b *Backend) CreateTemplate(ctx context.Context, spec vmm.Spec, dir string, parked func(context.Context, net.Conn) error) error {
	if err := b.CanTemplate(spec); err != nil {
		return err
	}
	size, err := DiskSize(spec.Disks[0])
	if err != nil {
		return err
	}
	placeholder := filepath.Join(dir, placeholderFile)
	if err := os.WriteFile(placeholder, nil, 0o600); err != nil {
		return err
	}
	defer os.Remove(placeholder) // after QEMU has ended (deferred below)
	if err := os.Truncate(placeholder, size); err != nil {
		return err
	}
	spec.Disks = []vmm.Disk{{Path: placeholder, Serial: spec.Disks[0].Serial}}
	spec.Dir = dir
	spec.ConsoleLog = filepath.Join(dir, "console.log")
	inst, err := b.start(spec, b.templateArgs(spec))
	if err != nil {
		return err
	}
	defer func() { inst.Kill(); inst.Ended() }()
	conn, err := inst.Control(ctx)
	if err != nil {
		return fmt.Errorf("template guest: %w", err)
	}
	defer conn.Close() // after the save: the port stays connected in the saved state
	if err := parked(ctx, conn); err != nil {
		return fmt.Errorf("template guest: %w", inst.explain(err))
	}
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	q, err := dialQMP(ctx, inst.qmp, inst.Proc.Done())
	if err != nil {
		return err
	}
	defer q.Close()
	dst, err := os.OpenFile(filepath.Join(dir, TemplateFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer dst.Close()
	if err := q.passFile("template", dst); err != nil {
		return err
	}
	for _, c := range []struct {
		cmd  string
		args any
	}{
		{"stop", nil},
		{"migrate-set-capabilities", migrationEvents},
		{"migrate", map[string]any{"uri": "fd:template"}},
	} {
		if _, err := q.execute(c.cmd, c.args); err != nil {
			return fmt.Errorf("save template: %w", err)
		}
	}
	if err := q.migrated(); err != nil {
		return fmt.Errorf("save template: %w", inst.explain(err))
	}
	return nil
}

var migrationEvents = map[string]any{"capabilities": []map[string]any{{"capability": "events", "state": true}}}

// Restore starts QEMU paused (-S) waiting for a migration, feeds it the template and
// attaches spec's NICs and disks into the template's root ports; Resume runs the guest.
func (b *Backend) Restore(ctx context.Context, spec vmm.Spec, dir string) (vmm.Restored, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := b.CanTemplate(spec); err != nil {
		return nil, err
	}
	// Opened here and passed to QEMU: a template removed meanwhile (assets gc) still
	// restores whole.
	state, err := os.Open(filepath.Join(dir, TemplateFile))
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer state.Close()
	inst, err := b.start(spec, append(b.templateArgs(spec), "-S", "-incoming", "defer"))
	if err != nil {
		return nil, err
	}
	r := &restored{instance: inst}
	if err := r.restore(ctx, spec, state); err != nil {
		r.Kill()
		inst.Ended()
		return nil, fmt.Errorf("restore: %w", inst.explain(err))
	}
	return r, nil
}

// restored is a restored QEMU whose guest waits for Resume on the QMP session that loaded it.
type restored struct {
	*instance
	mu sync.Mutex
	q  *qmp // nil once resumed
}

// Resume continues the guest and ends the QMP session (Shutdown needs the monitor later).
func (r *restored) Resume(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.q == nil {
		return errors.New("qemu: resumed already")
	}
	defer func() { r.q.Close(); r.q = nil }()
	stop := context.AfterFunc(ctx, func() { r.q.c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := r.q.execute("cont", nil); err != nil {
		return fmt.Errorf("resume: %w", r.explain(err))
	}
	return nil
}

func (r *restored) Kill() error {
	r.mu.Lock()
	if r.q != nil {
		r.q.Close()
		r.q = nil
	}
	r.mu.Unlock()
	return r.instance.Kill()
}

func (r *restored) restore(ctx context.Context, spec vmm.Spec, state *os.File) error {
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	q, err := dialQMP(ctx, r.qmp, r.Proc.Done())
	if err != nil {
		return err
	}
	// The session outlives this call, until Resume: bounded by ctx here, not by a deadline.
	r.q = q
	q.c.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { q.c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := q.execute("migrate-set-capabilities", migrationEvents); err != nil {
		return err
	}
	if err := q.passFile("template", state); err != nil {
		return err
	}
	if _, err := q.execute("migrate-incoming", map[string]any{"uri": "fd:template"}); err != nil {
		return err
	}
	if err := q.migrated(); err != nil {
		return err
	}
	port := 0
	// NICs first: a guest waits for its root disk before anything else, so by then the
	// NIC has had the longest time to appear.
	for n, nic := range spec.NICs {
		id := fmt.Sprintf("net%d", n)
		if _, err := q.execute("netdev_add", map[string]any{"type": "tap", "id": id, "ifname": nic.TAP, "script": "no", "downscript": "no"}); err != nil {
			return err
		}
		if _, err := q.execute("device_add", map[string]any{"driver": "virtio-net-pci", "id": "v" + id, "netdev": id, "mac": nic.MAC, "bus": rootPort(port)}); err != nil {
			return err
		}
		port++
	}
	for n, d := range spec.Disks[1:] {
		id := fmt.Sprintf("disk%d", n+1)
		format := "raw"
		if d.Format != "" {
			format = d.Format
		}
		if _, err := q.execute("blockdev-add", map[string]any{
			"node-name": id, "driver": format, "read-only": d.ReadOnly,
			"file": map[string]any{"driver": "file", "filename": d.Path},
		}); err != nil {
			return err
		}
		dev := map[string]any{"driver": "virtio-blk-pci", "id": "v" + id, "drive": id, "bus": rootPort(port)}
		if d.Serial != "" {
			dev["serial"] = d.Serial
		}
		if _, err := q.execute("device_add", dev); err != nil {
			return err
		}
		port++
	}
	return nil
}

// DiskSize is the size the guest sees of d: the file's for raw, the virtual size in the
// header of a qcow2 image.
func DiskSize(d vmm.Disk) (int64, error) {
	f, err := os.Open(d.Path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if d.Format != "qcow2" {
		fi, err := f.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	var hdr [32]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil || string(hdr[:4]) != "QFI\xfb" {
		return 0, fmt.Errorf("%s: not a qcow2 image", d.Path)
	}
	return int64(binary.BigEndian.Uint64(hdr[24:32])), nil
}

// explain adds QEMU's own last words to err when it has exited.
func (i *instance) explain(err error) error {
	if !i.Proc.Exited() {
		return err
	}
	if werr := i.Wait(); werr != nil {
		return fmt.Errorf("%w (%v)", err, werr)
	}
	return err
}
