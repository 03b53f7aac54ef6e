package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// needTools fails (never skips) when a host tool is missing: the message names the package.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	if err := RequireTools(names...); err != nil {
		t.Fatal(err)
	}
}

// debugfs runs one read-only debugfs request against an image; no mount needed.
func debugfs(t *testing.T, img, request string) string {
	t.Helper()
	bin, err := lookTool("debugfs")
	if err != nil {
		t.Fatal(RequireTools("debugfs"))
	}
	cmd := exec.Command(bin, "-R", request, img)
	cmd.Env = append(os.Environ(), "DEBUGFS_PAGER=__none__")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("debugfs -R %q %s: %v: %s", request, img, err, stderr.String())
	}
	// debugfs exits 0 even when the image or path is missing and says so only on stderr,
	// where nothing but its version banner belongs.
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" && !strings.HasPrefix(line, "debugfs ") {
			t.Fatalf("debugfs -R %q %s: %s", request, img, stderr.String())
		}
	}
	return string(out)
}

type inode struct {
	ino      int
	typ      string // regular, directory, symlink, ...
	mode     string // octal permission bits as debugfs prints them, e.g. "04755"
	uid, gid int
	size     int64
	links    int
	linkDest string
}

var (
	reInode = regexp.MustCompile(`Inode:\s+(\d+)\s+Type:\s+(\S+)\s+Mode:\s+(\d+)`)
	reUser  = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+).*Size:\s+(\d+)`)
	reLinks = regexp.MustCompile(`Links:\s+(\d+)`)
	reDest  = regexp.MustCompile(`Fast link dest:\s+"([^"]*)"`)
)

func statImage(t *testing.T, img, path string) inode {
	t.Helper()
	out := debugfs(t, img, "stat "+path)
	m := reInode.FindStringSubmatch(out)
	u := reUser.FindStringSubmatch(out)
	l := reLinks.FindStringSubmatch(out)
	if m == nil || u == nil || l == nil {
		t.Fatalf("debugfs stat %s: unexpected output:\n%s", path, out)
	}
	atoi := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	in := inode{ino: atoi(m[1]), typ: m[2], mode: m[3], uid: atoi(u[1]), gid: atoi(u[2]), size: int64(atoi(u[3])), links: atoi(l[1])}
	if d := reDest.FindStringSubmatch(out); d != nil {
		in.linkDest = d[1]
	}
	return in
}

func catImage(t *testing.T, img, path string) []byte {
	t.Helper()
	return []byte(debugfs(t, img, "cat "+path))
}

func write(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	// Explicit chmod: WriteFile's mode is filtered by the umask and never sets setuid.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestMakeExt4(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	root := os.Geteuid() == 0
	src := t.TempDir()
	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	hello := []byte("hello, world\n")
	write(t, filepath.Join(src, "etc/hello"), hello, 0o644)
	must(t, os.Link(filepath.Join(src, "etc/hello"), filepath.Join(src, "etc/hard")))
	must(t, os.Symlink("etc/hello", filepath.Join(src, "link")))
	must(t, os.Mkdir(filepath.Join(src, "empty"), 0o755))
	must(t, os.Chmod(filepath.Join(src, "empty"), 0o755))
	write(t, filepath.Join(src, "bin/suid"), []byte("#!/bin/sh\n"), 0o755|os.ModeSetuid)
	write(t, filepath.Join(src, "data.bin"), data, 0o600)
	if root {
		write(t, filepath.Join(src, "home/user/owned"), []byte("mine\n"), 0o640)
		must(t, os.Chown(filepath.Join(src, "home/user/owned"), 1000, 1000))
		// The tree's own root is someone else's: the image's root must still be 0:0.
		must(t, os.Chown(src, 1000, 1000))
	}
	must(t, os.Chmod(src, 0o700)) // t.TempDir's mode; the image's root must still be 0755

	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := MakeExt4(context.Background(), src, img, 0); err != nil {
		t.Fatal(err)
	}

	if in := statImage(t, img, "/"); in.typ != "directory" || in.mode != "0755" || in.uid != 0 || in.gid != 0 {
		t.Errorf("root: %+v, want directory 0755 owned 0:0", in)
	}
	h := statImage(t, img, "/etc/hello")
	if h.typ != "regular" || h.mode != "0644" || h.size != int64(len(hello)) || h.links != 2 {
		t.Errorf("/etc/hello: %+v, want regular 0644, %d bytes, 2 links", h, len(hello))
	}
	if got := catImage(t, img, "/etc/hello"); !bytes.Equal(got, hello) {
		t.Errorf("/etc/hello content %q, want %q", got, hello)
	}
	if hard := statImage(t, img, "/etc/hard"); hard.ino != h.ino {
		t.Errorf("/etc/hard is inode %d, /etc/hello %d: hard link lost", hard.ino, h.ino)
	}
	if in := statImage(t, img, "/link"); in.typ != "symlink" || in.linkDest != "etc/hello" {
		t.Errorf("/link: %+v, want symlink to etc/hello", in)
	}
	if in := statImage(t, img, "/empty"); in.typ != "directory" || in.mode != "0755" {
		t.Errorf("/empty: %+v, want directory 0755", in)
	}
	if ls := strings.Fields(debugfs(t, img, "ls /empty")); len(ls) == 0 || strings.Contains(strings.Join(ls, " "), "hello") {
		t.Errorf("/empty lists %v", ls)
	}
	if in := statImage(t, img, "/bin/suid"); in.typ != "regular" || in.mode != "04755" {
		t.Errorf("/bin/suid: %+v, want regular 04755", in)
	}
	if in := statImage(t, img, "/data.bin"); in.mode != "0600" || in.size != int64(len(data)) {
		t.Errorf("/data.bin: %+v, want 0600, %d bytes", in, len(data))
	}
	if got := catImage(t, img, "/data.bin"); !bytes.Equal(got, data) {
		t.Errorf("/data.bin content differs (%d bytes read)", len(got))
	}
	if root {
		if in := statImage(t, img, "/home/user/owned"); in.uid != 1000 || in.gid != 1000 || in.mode != "0640" {
			t.Errorf("/home/user/owned: %+v, want 1000:1000 0640", in)
		}
		if got := catImage(t, img, "/home/user/owned"); string(got) != "mine\n" {
			t.Errorf("/home/user/owned content %q", got)
		}
	}

	stats := debugfs(t, img, "stats")
	for _, want := range []string{"Filesystem volume name:   rootfs", "Block size:               4096"} {
		if !strings.Contains(stats, want) {
			t.Errorf("stats lack %q:\n%s", want, stats)
		}
	}

	var st unix.Stat_t
	must(t, unix.Stat(img, &st))
	// ~1 MiB of content: 1.5 MiB + 256 MiB, rounded up to whole MiB.
	if st.Size%mib != 0 || st.Size < 257*mib || st.Size > 260*mib {
		t.Errorf("image is %d bytes, want about 258 MiB in whole MiB", st.Size)
	}
	if st.Blocks*512 > st.Size/4 {
		t.Errorf("image allocates %d of %d bytes: not sparse", st.Blocks*512, st.Size)
	}
}

func TestMakeExt4ExplicitSize(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	src := t.TempDir()
	write(t, filepath.Join(src, "f"), []byte("x"), 0o644)
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	must(t, MakeExt4(context.Background(), src, img, 64*mib))
	fi, err := os.Stat(img)
	must(t, err)
	if fi.Size() != 64*mib {
		t.Fatalf("image is %d bytes, want %d", fi.Size(), 64*mib)
	}
	if stats := debugfs(t, img, "stats"); !strings.Contains(stats, "Block count:              16384") {
		t.Errorf("want 16384 4 KiB blocks:\n%s", stats)
	}
}

// Many tiny files: the inode count must follow the tree, not just the size. A 32 MiB image
// gets 2048 inodes at mke2fs's default of one per 16 KiB; the tree needs more.
func TestMakeExt4ManySmallFiles(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	src := t.TempDir()
	const n, perDir = 3000, 200
	for i := range n {
		d := filepath.Join(src, "many", strconv.Itoa(i/perDir))
		if i%perDir == 0 {
			must(t, os.MkdirAll(d, 0o755))
		}
		must(t, os.WriteFile(filepath.Join(d, strconv.Itoa(i)), nil, 0o644))
	}
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	must(t, MakeExt4(context.Background(), src, img, 32*mib))
	if in := statImage(t, img, fmt.Sprintf("/many/%d/%d", (n-1)/perDir, n-1)); in.typ != "regular" {
		t.Errorf("last file: %+v", in)
	}
}

func TestMakeExt4OutExists(t *testing.T) {
	needTools(t, "mkfs.ext4")
	src := t.TempDir()
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	must(t, os.WriteFile(img, []byte("precious"), 0o644))
	if err := MakeExt4(context.Background(), src, img, 0); !errors.Is(err, os.ErrExist) {
		t.Fatalf("err = %v, want one wrapping os.ErrExist", err)
	}
	if b, _ := os.ReadFile(img); string(b) != "precious" {
		t.Fatalf("existing file changed to %q", b)
	}
}

func TestMakeExt4FailureLeavesNoImage(t *testing.T) {
	needTools(t, "mkfs.ext4")
	big := t.TempDir()
	noise := make([]byte, 16*mib) // random: mkfs.ext4 -d would leave zeroes out as holes
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(big, "big"), noise, 0o644)
	notDir := filepath.Join(t.TempDir(), "file")
	write(t, notDir, []byte("x"), 0o644)
	tests := []struct {
		name, dir string
		size      int64
		want      string
	}{
		{"dir missing", filepath.Join(t.TempDir(), "nope"), 0, "no such file"},
		{"dir is a file", notDir, 0, "not a directory"},
		{"content does not fit", big, 8 * mib, "mkfs.ext4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "rootfs.ext4")
			err := MakeExt4(context.Background(), tt.dir, img, tt.size)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if _, err := os.Lstat(img); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("image left behind after a failure: %v", err)
			}
		})
	}
}

func TestMakeExt4Cancelled(t *testing.T) {
	needTools(t, "mkfs.ext4")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := MakeExt4(ctx, t.TempDir(), img, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Lstat(img); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("image left behind: %v", err)
	}
}

// superblock returns `dumpe2fs -h` of an image.
func superblock(t *testing.T, img string) string {
	t.Helper()
	bin, err := lookTool("dumpe2fs")
	if err != nil {
		t.Fatal("dumpe2fs not found: install the Debian package e2fsprogs")
	}
	out, err := exec.Command(bin, "-h", img).Output()
	if err != nil {
		t.Fatalf("dumpe2fs -h %s: %v", img, err)
	}
	return string(out)
}

// sbField reads one "Name:   value" line of dumpe2fs -h.
func sbField(t *testing.T, sb, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s*(.*)$`).FindStringSubmatch(sb)
	if m == nil {
		t.Fatalf("dumpe2fs -h has no %q line:\n%s", name, sb)
	}
	return strings.TrimSpace(m[1])
}

func fsckClean(t *testing.T, img string) {
	t.Helper()
	bin, err := lookTool("e2fsck")
	if err != nil {
		t.Fatal("e2fsck not found: install the Debian package e2fsprogs")
	}
	if out, err := exec.Command(bin, "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

func TestMakeExt4WithFeatureSets(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	src := t.TempDir()
	write(t, filepath.Join(src, "etc/hello"), []byte("hi\n"), 0o644)
	tests := []struct {
		features Ext4Features
		want     string // dumpe2fs order
	}{
		{FeaturesUbuntu2204, "has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum"},
		{FeaturesLegacy, "has_journal ext_attr resize_inode dir_index filetype extent flex_bg sparse_super large_file huge_file uninit_bg dir_nlink extra_isize"},
	}
	for _, tt := range tests {
		t.Run(string(tt.features), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "rootfs.ext4")
			must(t, MakeExt4With(context.Background(), src, img, Ext4Options{Size: 64 * mib, Features: tt.features, Label: "volume"}))
			sb := superblock(t, img)
			if got := sbField(t, sb, "Filesystem volume name"); got != "volume" {
				t.Errorf("label %q, want volume", got)
			}
			if got := sbField(t, sb, "Filesystem features"); got != tt.want {
				t.Errorf("features\n got %s\nwant %s", got, tt.want)
			}
			if got := sbField(t, sb, "Inode size"); got != "256" {
				t.Errorf("inode size %s, want 256", got)
			}
			if got := sbField(t, sb, "Block size"); got != "4096" {
				t.Errorf("block size %s, want 4096", got)
			}
			for _, never := range []string{"orphan_file", "metadata_csum_seed"} {
				if strings.Contains(sb, never) {
					t.Errorf("%s enabled", never)
				}
			}
			if got := string(catImage(t, img, "/etc/hello")); got != "hi\n" {
				t.Errorf("/etc/hello holds %q", got)
			}
			fsckClean(t, img)
		})
	}
}

// The host set is whatever mke2fs.conf says: the options must not add or remove anything.
func TestMakeExt4KeepsHostFeaturesByDefault(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	src := t.TempDir()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.ext4"), filepath.Join(dir, "b.ext4")
	must(t, MakeExt4(context.Background(), src, a, 64*mib))
	must(t, MakeExt4With(context.Background(), src, b, Ext4Options{Size: 64 * mib, Features: FeaturesHost}))
	plain := filepath.Join(dir, "plain.ext4")
	must(t, os.WriteFile(plain, nil, 0o644))
	must(t, os.Truncate(plain, 64*mib))
	mkfs, _ := lookTool("mkfs.ext4")
	if out, err := exec.Command(mkfs, "-q", "-F", plain).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	want := sbField(t, superblock(t, plain), "Filesystem features")
	for _, img := range []string{a, b} {
		if got := sbField(t, superblock(t, img), "Filesystem features"); got != want {
			t.Errorf("%s features\n got %s\nwant %s (plain mkfs.ext4)", filepath.Base(img), got, want)
		}
	}
}

func TestMakeExt4KernelTestingSizeIsSparse(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	src := t.TempDir()
	write(t, filepath.Join(src, "etc/hostname"), []byte("vm\n"), 0o644)
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	must(t, MakeExt4With(context.Background(), src, img, Ext4Options{Size: KernelTestingSize, Features: FeaturesLegacy}))
	var st unix.Stat_t
	must(t, unix.Stat(img, &st))
	if st.Size != 5<<30 {
		t.Errorf("image is %d bytes, want 5 GiB", st.Size)
	}
	// Metadata and the 64 MiB journal are written; the rest stays a hole.
	if st.Blocks*512 > 160*mib {
		t.Errorf("image allocates %d MiB of 5 GiB: not sparse", st.Blocks*512/mib)
	}
	sb := superblock(t, img)
	if got := sbField(t, sb, "Block count"); got != "1310720" {
		t.Errorf("block count %s, want 1310720", got)
	}
	// mke2fs's default density (one inode per 16 KiB), as kernel-testing's images get.
	if got := sbField(t, sb, "Inode count"); got != "327680" {
		t.Errorf("inode count %s, want 327680", got)
	}
	fsckClean(t, img)
}

func TestMakeExt4WithRejectsBadOptions(t *testing.T) {
	for _, o := range []Ext4Options{{Features: "ext5"}, {Size: -1}} {
		img := filepath.Join(t.TempDir(), "rootfs.ext4")
		if err := MakeExt4With(context.Background(), t.TempDir(), img, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
		if _, err := os.Lstat(img); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%+v: image left behind", o)
		}
	}
}

func TestParseExt4Features(t *testing.T) {
	for in, want := range map[string]Ext4Features{"": FeaturesHost, "host": FeaturesHost, "ubuntu-22.04": FeaturesUbuntu2204, "legacy": FeaturesLegacy} {
		if got, err := ParseExt4Features(in); err != nil || got != want {
			t.Errorf("ParseExt4Features(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseExt4Features("Legacy"); err == nil || !strings.Contains(err.Error(), "ubuntu-22.04") {
		t.Errorf("unknown name: err = %v, want one listing the choices", err)
	}
}
