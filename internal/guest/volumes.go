//go:build linux

package guest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// MountVolumes mounts each volume's disk on its target below root (use "/" in the guest),
// creating the target, parents before their children whatever the order given. A disk is
// awaited up to timeout. A read-only volume that was not cleanly unmounted (its VM was
// killed) cannot replay its journal on a read-only disk: it is mounted without the replay,
// with a warning, rather than not at all.
func MountVolumes(root string, devs Devices, mounts []vmconfig.Mount, timeout time.Duration, log *slog.Logger) error {
	find := func(d vmconfig.Disk) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return devs.Disk(ctx, d)
	}
	return mountVolumes(root, mounts, find, unix.Mount, log)
}

type mountFunc func(source, target, fstype string, flags uintptr, data string) error

func mountVolumes(root string, mounts []vmconfig.Mount, find func(vmconfig.Disk) (string, error), mount mountFunc, log *slog.Logger) error {
	ordered := slices.Clone(mounts)
	// Fewer path elements first: /data before /data/cache.
	slices.SortStableFunc(ordered, func(a, b vmconfig.Mount) int {
		return strings.Count(a.Target, "/") - strings.Count(b.Target, "/")
	})
	for _, m := range ordered {
		dev, err := find(m.Disk)
		if err != nil {
			return fmt.Errorf("volume %s: %w", m.Target, err)
		}
		target := filepath.Join(root, m.Target)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("volume %s: %w", m.Target, err)
		}
		var flags uintptr
		if m.ReadOnly {
			flags = unix.MS_RDONLY
		}
		err = mount(dev, target, m.Disk.FSType, flags, "")
		if errors.Is(err, unix.EROFS) && m.ReadOnly && m.Disk.FSType == "ext4" {
			log.Warn("volume was not cleanly unmounted: mounted without replaying its journal; its last writes may be missing (attach it read-write once to repair it)", "target", m.Target)
			err = mount(dev, target, m.Disk.FSType, flags, "noload")
		}
		if err != nil {
			return fmt.Errorf("volume %s: mount %s (%s): %w", m.Target, dev, m.Disk.FSType, err)
		}
	}
	return nil
}

// unmountVolumes unmounts every filesystem on a virtio disk but the root, children first, so
// that each is clean (journal checkpointed) when the VM ends: a volume left dirty cannot be
// mounted read-only as it is. One still busy is remounted read-only instead, which
// checkpoints it too; one that refuses both is written back (syncfs) and left to its journal.
func unmountVolumes(mountsFile string) {
	for _, target := range slices.Backward(volumeTargets(mountsFile)) {
		if unix.Unmount(target, 0) == nil {
			continue
		}
		if unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_RDONLY, "") == nil {
			continue
		}
		if fd, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			_ = unix.Syncfs(fd)
			unix.Close(fd)
		}
	}
}

// volumeTargets lists, in mount order, the mount points of virtio disks other than "/"
// in a mounts table (/proc/self/mounts).
func volumeTargets(mountsFile string) []string {
	f, err := os.Open(mountsFile)
	if err != nil {
		return nil
	}
	defer f.Close()
	var targets []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || !strings.HasPrefix(fields[0], "/dev/vd") || fields[1] == "/" {
			continue
		}
		// The table escapes spaces and the like as octal (\040).
		targets = append(targets, unescapeMountField(fields[1]))
	}
	return targets
}

func unescapeMountField(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if c, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
