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

// KernelTestingSize is the size falcosecurity/kernel-testing gives every rootfs (truncate -s
// 5G, then mkfs.ext4): sparse, so it costs only what is written.
const KernelTestingSize = 5 << 30

// Ext4Features chooses a new filesystem's feature set, for the oldest kernel that must mount it.
type Ext4Features string

const (
	// FeaturesHost takes whatever this host's /etc/mke2fs.conf enables: right for guests as
	// new as the host, wrong for old ones (e2fsprogs 1.47 upstream enables orphan_file, which
	// needs Linux 5.15, and metadata_csum_seed, which needs 4.4).
	FeaturesHost Ext4Features = ""
	// FeaturesUbuntu2204 is exactly what mkfs.ext4 makes on kernel-testing's reference
	// runners (Ubuntu 22.04, e2fsprogs 1.46.5) and on Debian 12: base features plus extent,
	// 64bit, flex_bg, huge_file, dir_nlink, extra_isize and metadata_csum; no orphan_file,
	// no metadata_csum_seed. metadata_csum is in mainline since 3.5 but only settled around
	// 3.18 (journal checksum v3); CentOS 7's e2fsprogs 1.42 cannot fsck it. For guests >= 3.18.
	FeaturesUbuntu2204 Ext4Features = "ubuntu-22.04"
	// FeaturesLegacy is what CentOS 7's own mkfs.ext4 (e2fsprogs 1.42.9) makes: no
	// metadata_csum (group descriptors checksummed by uninit_bg instead), no 64bit (only
	// needed beyond 16 TiB). Every kernel from 2.6.32 on mounts it and every in-guest e2fsck
	// checks it: the choice when centos-3.10 or oraclelinux-3.10 style guests are in a run.
	FeaturesLegacy Ext4Features = "legacy"
)

// ext4FeatureLists are full -O lists: "none" first so the host's mke2fs.conf adds nothing.
var ext4FeatureLists = map[Ext4Features]string{
	FeaturesUbuntu2204: "none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg," +
		"sparse_super,large_file,huge_file,dir_nlink,extra_isize,metadata_csum",
	FeaturesLegacy: "none,has_journal,ext_attr,resize_inode,dir_index,filetype,extent,flex_bg," +
		"sparse_super,large_file,huge_file,uninit_bg,dir_nlink,extra_isize",
}

// ParseExt4Features reads a feature set's name as a user writes it: "host" (or empty),
// "ubuntu-22.04", "legacy".
func ParseExt4Features(s string) (Ext4Features, error) {
	switch f := Ext4Features(s); f {
	case "", "host":
		return FeaturesHost, nil
	case FeaturesUbuntu2204, FeaturesLegacy:
		return f, nil
	}
	return "", fmt.Errorf("ext4 features: %q, want host, ubuntu-22.04 or legacy", s)
}

// Ext4Options are MakeExt4With's choices; the zero value is MakeExt4's behaviour.
type Ext4Options struct {
	// Size in bytes (KernelTestingSize for kernel-testing's 5 GiB); 0 sizes from the content.
	Size int64
	// Features is the feature set; FeaturesHost (zero) keeps the host's mke2fs.conf defaults.
	Features Ext4Features
	// Label is the filesystem label (at most 16 bytes); "" means "rootfs".
	Label string
}

// MakeExt4 writes an ext4 filesystem image file at out populated from dir with `mkfs.ext4 -d`
// (no mount, no loop), sized from the content (apparent size of the tree + 50% + 256 MiB,
// rounded up to MiB) or size bytes if size > 0. Owners, modes, links and xattrs are copied
// from dir; the root directory is 0:0 mode 0755 whatever dir's are; the label is "rootfs".
// The file is sparse. out must not exist; on error it does not exist.
func MakeExt4(ctx context.Context, dir, out string, size int64) error {
	return MakeExt4With(ctx, dir, out, Ext4Options{Size: size})
}

// MakeExt4With is MakeExt4 with a chosen size and feature set. With a named feature set the
// inode size is fixed at 256 bytes too (what both Ubuntu 22.04 and CentOS 7 use), so the
// result does not depend on the host's mke2fs.conf.
func MakeExt4With(ctx context.Context, dir, out string, opts Ext4Options) (err error) {
	size := opts.Size
	var features []string
	if opts.Features != FeaturesHost {
		list, ok := ext4FeatureLists[opts.Features]
		if !ok {
			return fmt.Errorf("ext4 image: features: unknown set %q", opts.Features)
		}
		features = []string{"-O", list, "-I", "256"}
	}
	if size < 0 {
		return fmt.Errorf("ext4 image: size: %d bytes is negative", size)
	}
	label := opts.Label
	if label == "" {
		label = "rootfs"
	}
	if len(label) > 16 {
		return fmt.Errorf("ext4 image: label: %q is longer than 16 bytes", label)
	}
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

	args := append([]string{
		"-q",
		"-b", "4096", // not the 1 KiB blocks mke2fs picks for images under 512 MiB
		"-N", strconv.FormatInt(inodes, 10),
		"-L", label,
		"-E", "root_owner=0:0",
	}, features...)
	cmd := exec.CommandContext(ctx, mkfs, append(args, "-d", dir, out)...)
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
