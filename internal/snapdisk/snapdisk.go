// Package snapdisk turns the root filesystem containerd hands a runtime — the mounts of a
// snapshot the host wrote (overlay layers, or a bind mount) — into an ext4 disk image for a
// VM, with `mkfs.ext4 -d` from a read-only mount of the snapshot. No filesystem a guest has
// written is ever mounted: the guest writes to its own clone of the image, never back to
// the snapshot. Images of an image's unchanged layers are cached by the layers' key, so a
// second container of the same image does not rebuild its disk.
package snapdisk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/mount"

	"github.com/firegopher/firegopher/internal/image"
)

// Mount is one mount of a snapshot as containerd describes it.
type Mount struct {
	Type    string
	Source  string
	Options []string
}

// Cache builds and keeps disk images under Dir.
type Cache struct {
	Dir string
	Log *slog.Logger
}

// Disk is a built image: Path is the ext4 file, Release removes it when it is not a cached
// one (call it once the VM that uses it has ended).
type Disk struct {
	Path    string
	Cached  bool
	Release func()
}

// Key is the cache key of mounts: the snapshot's read-only layers, when the snapshot has no
// content of its own (a new container's empty upper directory). It is "" when the content
// is the container's own (a non-empty upper directory, a writable bind mount).
func Key(mounts []Mount) string {
	if len(mounts) != 1 {
		return ""
	}
	m := mounts[0]
	switch m.Type {
	case "overlay":
		lower, upper := overlayDirs(m.Options)
		if lower == "" || (upper != "" && !emptyDir(upper)) {
			return ""
		}
		return digest("overlay", lower)
	case "bind", "rbind":
		if !hasOption(m.Options, "ro") {
			return ""
		}
		return digest("bind", m.Source)
	}
	return ""
}

func digest(kind, s string) string {
	h := sha256.Sum256([]byte(kind + "\x00" + s))
	return hex.EncodeToString(h[:])
}

// Build returns the disk image of mounts, from the cache when their Key has one. rootPath
// is used instead when mounts is empty (the bundle's rootfs directory, prepared by the
// client).
func (c *Cache) Build(ctx context.Context, mounts []Mount, rootPath string) (*Disk, error) {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, err
	}
	key := Key(mounts)
	if key != "" {
		path := filepath.Join(c.Dir, key+".ext4")
		if _, err := os.Stat(path); err == nil {
			c.log().Debug("rootfs from cache", "path", path)
			return &Disk{Path: path, Cached: true, Release: func() {}}, nil
		}
	}
	tmp, err := os.MkdirTemp(c.Dir, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	src := rootPath
	if len(mounts) > 0 {
		src = filepath.Join(tmp, "rootfs")
		if err := os.Mkdir(src, 0o700); err != nil {
			return nil, err
		}
		if err := mountReadOnly(mounts, src); err != nil {
			return nil, err
		}
		defer func() {
			if err := mount.UnmountAll(src, 0); err != nil {
				c.log().Warn("unmount snapshot", "path", src, "error", err)
			}
		}()
	}
	if src == "" {
		return nil, errors.New("rootfs: no mounts and no root path")
	}
	out := filepath.Join(tmp, "rootfs.ext4")
	if err := image.MakeExt4(ctx, src, out, 0); err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	if key != "" {
		// Atomic: a concurrent build of the same key renames a complete file too.
		path := filepath.Join(c.Dir, key+".ext4")
		if err := os.Rename(out, path); err != nil {
			return nil, err
		}
		c.log().Info("rootfs built and cached", "path", path)
		return &Disk{Path: path, Cached: true, Release: func() {}}, nil
	}
	f, err := os.CreateTemp(c.Dir, "private-*.ext4")
	if err != nil {
		return nil, err
	}
	f.Close()
	if err := os.Rename(out, f.Name()); err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	path := f.Name()
	return &Disk{Path: path, Release: func() { os.Remove(path) }}, nil
}

// mountReadOnly mounts the snapshot at target without writing to it: an overlay's upper
// directory becomes its top lower layer (no work directory is touched), a single layer is
// bind mounted, everything read-only.
func mountReadOnly(mounts []Mount, target string) error {
	var ms []mount.Mount
	for _, m := range mounts {
		if m.Type == "overlay" {
			lower, upper := overlayDirs(m.Options)
			layers := strings.Split(lower, ":")
			if upper != "" {
				layers = append([]string{upper}, layers...)
			}
			if len(layers) == 1 {
				ms = append(ms, mount.Mount{Type: "bind", Source: layers[0], Options: []string{"rbind", "ro"}})
				continue
			}
			ms = append(ms, mount.Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + strings.Join(layers, ":"), "ro"}})
			continue
		}
		opts := []string{"ro"}
		for _, o := range m.Options {
			if o != "rw" && o != "ro" {
				opts = append(opts, o)
			}
		}
		ms = append(ms, mount.Mount{Type: m.Type, Source: m.Source, Options: opts})
	}
	if err := mount.All(ms, target); err != nil {
		mount.UnmountAll(target, 0)
		return fmt.Errorf("rootfs: mount snapshot read-only: %w", err)
	}
	return nil
}

// overlayDirs returns an overlay mount's lowerdir list and upperdir.
func overlayDirs(opts []string) (lower, upper string) {
	for _, o := range opts {
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			lower = v
		} else if v, ok := strings.CutPrefix(o, "upperdir="); ok {
			upper = v
		}
	}
	return lower, upper
}

func hasOption(opts []string, want string) bool {
	for _, o := range opts {
		if o == want {
			return true
		}
	}
	return false
}

func emptyDir(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) == 0
}

func (c *Cache) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}
