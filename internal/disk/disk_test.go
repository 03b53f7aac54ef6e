package disk

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const mib = 1 << 20

// makeSparse writes a 6 MiB file: 1 MiB of data, a 4 MiB hole, 1 MiB of data.
func makeSparse(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{0, 5 * mib} {
		if _, err := f.WriteAt(randBytes(t, mib), off); err != nil {
			t.Fatal(err)
		}
	}
	// fsync so st_blocks reflects allocated blocks, not delayed allocation.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func stat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func sameContent(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ (%d and %d bytes)", a, b, len(x), len(y))
	}
}

// checkSparseClone checks dst is a byte-for-byte copy of src whose hole stayed a hole.
func checkSparseClone(t *testing.T, src, dst string) {
	t.Helper()
	sameContent(t, src, dst)
	s, d := stat(t, src), stat(t, dst)
	if d.Size != s.Size {
		t.Fatalf("size %d, want %d", d.Size, s.Size)
	}
	if d.Mode != s.Mode {
		t.Errorf("mode %o, want %o", d.Mode, s.Mode)
	}
	// 2 MiB of data is 4096 512-byte blocks; allow a little for filesystem metadata.
	if d.Blocks > s.Blocks+64 || d.Blocks*512 >= 3*mib {
		t.Fatalf("dst has %d blocks (%d bytes) for src's %d: the hole was filled", d.Blocks, d.Blocks*512, s.Blocks)
	}
	f, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	next, err := unix.Seek(int(f.Fd()), mib, unix.SEEK_DATA)
	if err != nil {
		t.Fatal(err)
	}
	if next != 5*mib {
		t.Fatalf("after 1 MiB the next data is at %d, want %d (the hole)", next, 5*mib)
	}
}

func isExt4(t *testing.T, dir string) bool {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return fs.Type == unix.EXT4_SUPER_MAGIC
}

func TestCloneSparse(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	makeSparse(t, src)
	m, err := Clone(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	// ext4 has no reflink, so there Clone must have fallen back.
	if isExt4(t, dir) && m != SparseCopy {
		t.Fatalf("method %q on ext4, want %q", m, SparseCopy)
	}
	t.Logf("method: %s", m)
	checkSparseClone(t, src, dst)
}

// The sparse-copy path on whatever filesystem TMPDIR is, even one that can reflink.
func TestCloneSparseCopyFallback(t *testing.T) {
	orig := ficlone
	t.Cleanup(func() { ficlone = orig })
	ficlone = func(int, int) error { return unix.EOPNOTSUPP }

	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	makeSparse(t, src)
	m, err := Clone(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if m != SparseCopy {
		t.Fatalf("method %q, want %q", m, SparseCopy)
	}
	checkSparseClone(t, src, dst)
}

func TestCloneEmptyAndAllHole(t *testing.T) {
	dir := t.TempDir()
	for name, size := range map[string]int64{"empty": 0, "hole": 8 * mib} {
		src, dst := filepath.Join(dir, name), filepath.Join(dir, name+".clone")
		if err := os.WriteFile(src, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(src, size); err != nil {
			t.Fatal(err)
		}
		if _, err := Clone(src, dst); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sameContent(t, src, dst)
		if st := stat(t, dst); st.Size != size || st.Blocks > 64 {
			t.Fatalf("%s: size %d blocks %d, want size %d and no data blocks", name, st.Size, st.Blocks, size)
		}
	}
}

func TestCloneDstExists(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	makeSparse(t, src)
	if err := os.WriteFile(dst, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Clone(src, dst); !errors.Is(err, os.ErrExist) {
		t.Fatalf("err = %v, want one wrapping os.ErrExist", err)
	}
	// The existing file is someone else's: it must be left alone, not removed.
	if b, err := os.ReadFile(dst); err != nil || string(b) != "keep me" {
		t.Fatalf("existing dst changed: %q, %v", b, err)
	}
}

func TestCloneSrcMissing(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "dst.img")
	if _, err := Clone(filepath.Join(dir, "nope.img"), dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want one wrapping os.ErrNotExist", err)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dst exists after a failed clone: %v", err)
	}
}

func TestCloneSrcNotRegular(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "dst.img")
	if _, err := Clone(dir, dst); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v, want 'not a regular file'", err)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dst exists after a failed clone: %v", err)
	}
}

func TestCloneFailingCopyRemovesDst(t *testing.T) {
	origClone, origCopy := ficlone, copyRange
	t.Cleanup(func() { ficlone, copyRange = origClone, origCopy })
	ficlone = func(int, int) error { return unix.EOPNOTSUPP }
	boom := errors.New("disk on fire")
	calls := 0
	// The first range copies for real, so dst already holds data when the second one fails.
	copyRange = func(out, in *os.File, off, n int64) error {
		if calls++; calls > 1 {
			return boom
		}
		return origCopy(out, in, off, n)
	}

	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.img"), filepath.Join(dir, "dst.img")
	makeSparse(t, src)
	if _, err := Clone(src, dst); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if calls != 2 {
		t.Fatalf("copyRange called %d times, want 2", calls)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dst left behind by a failed copy: %v", err)
	}
}

// A real write failure: cloning into a 1 MiB tmpfs runs out of space midway.
func TestCloneNoSpaceRemovesDst(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("umount %s: %v", mnt, err)
		}
	})
	src, dst := filepath.Join(t.TempDir(), "src.img"), filepath.Join(mnt, "dst.img")
	makeSparse(t, src)
	if _, err := Clone(src, dst); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dst left behind by a failed copy: %v", err)
	}
}

// lookTool finds a program in PATH or the sbin directories, which a non-login root PATH may lack.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// mountXFS makes a reflink-capable XFS filesystem in a loop file and mounts it for the test.
func mountXFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to attach a loop device and mount XFS")
	}
	mkfs, err := lookTool("mkfs.xfs")
	if err != nil {
		t.Fatalf("mkfs.xfs not found: install the Debian package xfsprogs (apt-get install xfsprogs)")
	}
	losetup, err := lookTool("losetup")
	if err != nil {
		t.Fatalf("losetup not found: install the Debian package mount")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// 512 MiB sparse: mkfs.xfs refuses filesystems under 300 MiB.
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512*mib); err != nil {
		t.Fatal(err)
	}
	run(t, mkfs, "-q", "-m", "reflink=1", img)
	dev := run(t, losetup, "--find", "--show", img)
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	if err := unix.Mount(dev, mnt, "xfs", 0, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", dev, mnt, err)
	}
	// Registered after the detach, so it runs before it.
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("umount %s: %v", mnt, err)
		}
	})
	return mnt
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return int64(fs.Bfree) * fs.Bsize
}

func TestCloneReflinkXFS(t *testing.T) {
	mnt := mountXFS(t)
	src, dst := filepath.Join(mnt, "src.img"), filepath.Join(mnt, "dst.img")
	data := randBytes(t, 32*mib)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	unix.Sync() // settle delayed allocation so the free-space numbers are stable
	before := freeBytes(t, mnt)

	m, err := Clone(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if m != Reflink {
		t.Fatalf("method %q on XFS with reflink=1, want %q", m, Reflink)
	}
	unix.Sync()
	// Shared blocks: the clone must not have used anything near another 32 MiB.
	if used := before - freeBytes(t, mnt); used > 4*mib {
		t.Fatalf("clone used %d bytes of free space: blocks not shared", used)
	}
	sameContent(t, src, dst)

	// Copy on write: writing the clone leaves the source as it was.
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xAB}, mib), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("writing the clone changed the source")
	}
}
