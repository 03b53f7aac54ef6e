// Package disk makes per-VM copy-on-write clones of cached disk images.
package disk

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Method says how Clone copied the data.
type Method string

const (
	// Reflink: dst shares src's blocks (FICLONE); a clone costs no space until written.
	Reflink Method = "reflink"
	// SparseCopy: the data ranges were copied and holes left as holes.
	SparseCopy Method = "sparse-copy"
)

// Clone makes dst a copy of src that shares blocks where the filesystem can (FICLONE ioctl, via
// unix.IoctlFileClone) and is otherwise a sparse copy (SEEK_DATA/SEEK_HOLE, holes stay holes).
// dst must not exist (O_EXCL); on any error dst is removed. Returns which method was used.
func Clone(src, dst string) (m Method, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("clone: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", fmt.Errorf("clone: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("clone: %s is not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return "", fmt.Errorf("clone: %w", err)
	}
	// From here on dst is ours: whatever fails, it must not be left half-written for a VM to boot.
	defer func() {
		if cerr := out.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("clone: %w", cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()

	// Any FICLONE error (EOPNOTSUPP on ext4, EXDEV across filesystems, EINVAL for odd sizes
	// on some filesystems, ...) just means "copy instead"; a real I/O problem shows up there.
	if ficlone(int(out.Fd()), int(in.Fd())) == nil {
		return Reflink, nil
	}
	if err := copySparse(out, in, st.Size()); err != nil {
		return "", fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	return SparseCopy, nil
}

// ficlone is unix.IoctlFileClone; a variable so tests can take the sparse-copy path on any filesystem.
var ficlone = unix.IoctlFileClone

// copyRange copies n bytes at off from in to out; a variable so tests can make a copy fail midway.
var copyRange = func(out, in *os.File, off, n int64) error {
	if _, err := in.Seek(off, io.SeekStart); err != nil {
		return err
	}
	if _, err := out.Seek(off, io.SeekStart); err != nil {
		return err
	}
	// *os.File.ReadFrom uses copy_file_range where it can and falls back to read/write.
	_, err := io.Copy(out, io.LimitReader(in, n))
	return err
}

// copySparse copies only the data ranges of in; setting the size first leaves the rest as holes.
func copySparse(out, in *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	fd := int(in.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // no data after off: the rest is a hole
		}
		if err != nil {
			return fmt.Errorf("SEEK_DATA: %w", err)
		}
		// Every file has an implicit hole at EOF, so SEEK_HOLE always finds an end.
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("SEEK_HOLE: %w", err)
		}
		hole = min(hole, size) // src may have grown since the Stat; copy what we sized for
		if hole <= data {
			break
		}
		if err := copyRange(out, in, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// ErrNoReflink: the filesystem cannot share blocks between these two files.
var ErrNoReflink = errors.New("no reflink here")

// CloneReflink makes dst share src's blocks (FICLONE), or fails with ErrNoReflink and leaves
// no dst: for callers with a better fallback than a copy.
func CloneReflink(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return err
	}
	ferr := ficlone(int(out.Fd()), int(in.Fd()))
	cerr := out.Close()
	if ferr != nil || cerr != nil {
		os.Remove(dst)
		if ferr != nil {
			return fmt.Errorf("%w: %v", ErrNoReflink, ferr)
		}
		return cerr
	}
	return nil
}
