package image

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const mib = 1 << 20

// MakeExt4 writes an ext4 filesystem image file at out populated from dir with `mkfs.ext4 -d`
// (no mount, no loop), sized from the content (apparent size of the tree + 50% + 256 MiB,
// rounded up to MiB) or size bytes if size > 0. Owners, modes, links and xattrs are copied
// from dir; the root directory is 0:0 mode 0755 whatever dir's are; the label is "rootfs".
// The file is sparse. out must not exist; on error it does not exist.
func MakeExt4(ctx context.Context, dir, out string, size int64) (err error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("ext4 image: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("ext4 image: %s is not a directory", dir)
	}
	mkfs, err := lookTool("mkfs.ext4")
	if err != nil {
		return RequireTools("mkfs.ext4")
	}
	t, err := measureTree(dir)
	if err != nil {
		return fmt.Errorf("ext4 image: %w", err)
	}
	if size <= 0 {
		size = roundUp(t.bytes+t.bytes/2+256*mib, mib)
	}
	// At least the default of one inode per 16 KiB, and enough for the tree plus room to
	// grow: a tree of many small files would otherwise run out of inodes before blocks.
	inodes := max(size/16384, t.entries+t.entries/2+1024)

	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("ext4 image: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(out)
		}
	}()
	// Truncate leaves the file one big hole; mke2fs writes only metadata and file data.
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ext4 image: %w", err)
	}

	cmd := exec.CommandContext(ctx, mkfs,
		"-q",
		"-b", "4096", // not the 1 KiB blocks mke2fs picks for images under 512 MiB
		"-N", strconv.FormatInt(inodes, 10),
		"-L", "rootfs",
		"-E", "root_owner=0:0",
		"-d", dir,
		out)
	// Stdin stays nil (/dev/null) so a prompt can never wait for an answer.
	if o, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("mkfs.ext4 %s: %w", out, ctx.Err())
		}
		return fmt.Errorf("mkfs.ext4 -d %s %s (%d bytes): %w: %s", dir, out, size, err, strings.TrimSpace(string(o)))
	}
	return nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

type treeSize struct {
	bytes   int64 // apparent size, like du -s --apparent-size: hard links counted once
	entries int64 // inodes the tree needs
}

func measureTree(dir string) (treeSize, error) {
	var t treeSize
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 && !fi.IsDir() {
			k := inode{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		t.bytes += fi.Size()
		t.entries++
		return nil
	})
	return t, err
}
