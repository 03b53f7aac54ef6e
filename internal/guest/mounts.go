//go:build linux

package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Mount is one filesystem to mount.
type Mount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
	Mode                   os.FileMode // of the target directory when created
}

const nodevExec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// EarlyMounts are mounted by init in the initramfs, first: device nodes, the kernel's
// views, and the rest of the workload's view (ptys, shared memory, message queues, /run,
// /tmp, cgroups), which needs nothing from the root disk or the config. Mounted this early
// they are in place before a snapshot template is saved, so that a VM restored from it
// does not mount them again; SwitchRoot moves them into the real root.
var EarlyMounts = []Mount{
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
	{"proc", "/proc", "proc", nodevExec, "", 0o555},
	{"sysfs", "/sys", "sysfs", nodevExec, "", 0o555},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,gid=5,ptmxmode=666", 0o755},
	{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"mqueue", "/dev/mqueue", "mqueue", nodevExec, "", 0o755},
	{"run", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755},
	{"tmp", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", nodevExec, "", 0o555},
}

// MountAll mounts each entry below root (use "/" in the guest), creating targets.
// A target that already has this filesystem type mounted is left alone.
func MountAll(root string, mounts []Mount) error {
	for _, m := range mounts {
		target := filepath.Join(root, m.Target)
		if err := os.MkdirAll(target, m.Mode); err != nil {
			return fmt.Errorf("mount %s: %w", m.Target, err)
		}
		if err := unix.Mount(m.Source, target, m.FSType, m.Flags, m.Data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.FSType, m.Target, err)
		}
	}
	return nil
}

// DevLinks are the /dev entries programs expect that devtmpfs does not create.
var DevLinks = map[string]string{
	"fd":     "/proc/self/fd",
	"stdin":  "/proc/self/fd/0",
	"stdout": "/proc/self/fd/1",
	"stderr": "/proc/self/fd/2",
	"core":   "/proc/kcore",
}

// LinkDev creates DevLinks in devDir, leaving existing entries alone.
func LinkDev(devDir string) error {
	for name, target := range DevLinks {
		if err := os.Symlink(target, filepath.Join(devDir, name)); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("link /dev/%s: %w", name, err)
		}
	}
	return nil
}

// MountRoot mounts the root disk dev (of type fstype) on target, creating target.
func MountRoot(dev, fstype, target string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, target, fstype, 0, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev, fstype, target, err)
	}
	return nil
}

// SwitchRoot makes newRoot the root of the guest: the early mounts move along, each with
// the mounts below it (so open device nodes and the control port stay valid), then newRoot
// is moved onto / and entered. The initramfs stays in memory; it is a few MiB and freeing
// it is not worth the risk.
func SwitchRoot(newRoot string) error {
	for _, m := range EarlyMounts {
		if filepath.Dir(m.Target) != "/" {
			continue // below another early mount: it moves with it
		}
		target := filepath.Join(newRoot, m.Target)
		if err := os.MkdirAll(target, m.Mode); err != nil {
			return fmt.Errorf("switch root: %w", err)
		}
		if err := unix.Mount(m.Target, target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("switch root: move %s: %w", m.Target, err)
		}
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := unix.Mount(newRoot, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	return unix.Chdir("/")
}

// UseConsole points stdin, stdout and stderr at /dev/console: the kernel could not open it
// for us before devtmpfs was mounted.
func UseConsole() error {
	f, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return err
		}
	}
	return nil
}
