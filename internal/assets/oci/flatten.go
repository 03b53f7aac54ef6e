package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// OCI whiteouts (image-spec layer.md): ".wh.NAME" deletes NAME from lower layers,
// ".wh..wh..opq" hides everything lower layers put in its directory.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
)

// flattener applies layers in order onto a directory, the way overlayfs would show them
// stacked. We run as root, so owners, device nodes and trusted/security xattrs are kept;
// mkfs.ext4 -d later copies all of it into the image.
type flattener struct {
	root string
	log  *slog.Logger
	// dirTimes holds directories' times, set once all layers are in: adding entries to a
	// directory would change its mtime again.
	dirTimes map[string][2]time.Time
	// touched holds the image paths the current layer wrote and their ancestors: whiteouts
	// only hide what lower layers put there, whatever the order of entries in the tar.
	touched map[string]bool
	buf     []byte
}

func newFlattener(root string, log *slog.Logger) *flattener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &flattener{root: root, log: log, dirTimes: map[string][2]time.Time{}, buf: make([]byte, 64<<10)}
}

// apply unpacks one uncompressed layer.
func (f *flattener) apply(ctx context.Context, r io.Reader) error {
	f.touched = map[string]bool{}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("tar: %w", err)
		}
		if err := f.entry(hdr, ctxReader{ctx, tr}); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
}

// finish sets the directory times recorded by apply.
func (f *flattener) finish() error {
	for host, t := range f.dirTimes {
		if fi, err := os.Lstat(host); err != nil || !fi.IsDir() {
			continue // replaced or deleted by a later layer
		}
		if err := setTimes(host, t[0], t[1]); err != nil {
			return err
		}
	}
	return nil
}

// cleanRel confines a tar name to the tree: "../x", "/x" and "./x" all mean "x"; the root
// is "".
func cleanRel(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (f *flattener) entry(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	rel := cleanRel(hdr.Name)
	if rel == "" {
		return nil // the root: MakeExt4 makes it 0:0 0755 anyway
	}
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if strings.HasPrefix(base, whiteoutPrefix) {
		return f.whiteout(dir, base)
	}
	parent, err := resolveIn(f.root, dir, true, true)
	if err != nil {
		return err
	}
	host := filepath.Join(parent, base)
	f.touch(rel)

	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := os.Lstat(host); err == nil && fi.IsDir() {
			// Merge into the lower layers' directory; its metadata becomes ours.
		} else {
			if err := removeEntry(host); err != nil {
				return err
			}
			if err := os.Mkdir(host, 0o700); err != nil {
				return err
			}
		}
		f.dirTimes[host] = [2]time.Time{hdr.AccessTime, hdr.ModTime}
		return f.meta(host, hdr)

	case tar.TypeReg, tar.TypeGNUSparse:
		if err := removeEntry(host); err != nil {
			return err
		}
		if err := f.writeFile(host, r); err != nil {
			return err
		}
		return f.meta(host, hdr)

	case tar.TypeSymlink:
		if err := removeEntry(host); err != nil {
			return err
		}
		if err := os.Symlink(hdr.Linkname, host); err != nil {
			return err
		}
		return f.meta(host, hdr)

	case tar.TypeLink:
		target := cleanRel(hdr.Linkname)
		tdir, tbase := path.Split(target)
		tparent, err := resolveIn(f.root, strings.TrimSuffix(tdir, "/"), true, false)
		if err != nil {
			return fmt.Errorf("hard link to %s: %w", hdr.Linkname, err)
		}
		thost := filepath.Join(tparent, tbase)
		if thost == host {
			return nil // a link to itself: the file is already there
		}
		if err := removeEntry(host); err != nil {
			return err
		}
		// Link, not copy: both names share one inode, as in the image.
		if err := os.Link(thost, host); err != nil {
			return fmt.Errorf("hard link to %s: %w", hdr.Linkname, err)
		}
		return nil

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if err := removeEntry(host); err != nil {
			return err
		}
		mode := uint32(hdr.Mode & 0o7777)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode |= unix.S_IFCHR
		case tar.TypeBlock:
			mode |= unix.S_IFBLK
		default:
			mode |= unix.S_IFIFO
		}
		if err := unix.Mknod(host, mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))); err != nil {
			return err
		}
		return f.meta(host, hdr)
	}
	f.log.Warn("skipping tar entry of unsupported type", "name", hdr.Name, "type", string(hdr.Typeflag))
	return nil
}

// touch records that this layer wrote rel (and so, implicitly, its parents).
func (f *flattener) touch(rel string) {
	for p := rel; p != "" && p != "." && !f.touched[p]; p = path.Dir(p) {
		f.touched[p] = true
	}
}

func (f *flattener) whiteout(dir, base string) error {
	parent, err := resolveIn(f.root, dir, true, false)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil // nothing below to hide
	}
	if err != nil {
		return err
	}
	if base == opaqueMarker {
		f.touch(dir)
		entries, err := os.ReadDir(parent)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := f.hide(path.Join(dir, e.Name()), filepath.Join(parent, e.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // other AUFS metadata (.wh..wh.plnk, ...): not content
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." {
		return nil
	}
	return f.hide(path.Join(dir, name), filepath.Join(parent, name))
}

// hide removes what lower layers put at rel, keeping whatever this layer wrote there.
func (f *flattener) hide(rel, host string) error {
	if !f.touched[rel] {
		return os.RemoveAll(host)
	}
	fi, err := os.Lstat(host)
	if err != nil || !fi.IsDir() {
		return nil
	}
	entries, err := os.ReadDir(host)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := f.hide(path.Join(rel, e.Name()), filepath.Join(host, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// removeEntry clears the way for a new entry; an existing non-directory is unlinked, never
// written through, so other hard links to it keep their content.
func removeEntry(host string) error {
	fi, err := os.Lstat(host)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return os.RemoveAll(host)
	}
	return os.Remove(host)
}

// writeFile copies a file's content, leaving holes for runs of zeros so that disk images
// and other sparse files stay sparse.
func (f *flattener) writeFile(host string, r io.Reader) error {
	out, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	var off int64
	for {
		n, rerr := io.ReadFull(r, f.buf)
		if n > 0 {
			chunk := f.buf[:n]
			if isZero(chunk) {
				_, err = out.Seek(int64(n), io.SeekCurrent)
			} else {
				_, err = out.Write(chunk)
			}
			if err != nil {
				out.Close()
				return err
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			out.Close()
			return rerr
		}
	}
	// A trailing hole needs the size set explicitly.
	if err := out.Truncate(off); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

var zeros = make([]byte, 64<<10)

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// meta applies owner, mode, xattrs and times. Owner first: chown clears setuid/setgid and
// file capabilities, which the mode and xattrs then restore.
func (f *flattener) meta(host string, hdr *tar.Header) error {
	if err := os.Lchown(host, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Chmod(host, uint32(hdr.Mode&0o7777)); err != nil {
			return err
		}
	}
	keys := make([]string, 0, len(hdr.PAXRecords))
	for k := range hdr.PAXRecords {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if err := unix.Lsetxattr(host, attr, []byte(hdr.PAXRecords[k]), 0); err != nil {
			// user.* on a symlink and the like: the kernel's rules, not a broken image.
			f.log.Warn("extended attribute not kept", "path", hdr.Name, "xattr", attr, "error", err)
		}
	}
	if hdr.Typeflag == tar.TypeDir {
		return nil // finish sets it
	}
	return setTimes(host, hdr.AccessTime, hdr.ModTime)
}

func setTimes(host string, atime, mtime time.Time) error {
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	if atime.IsZero() {
		atime = mtime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, host, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// resolveIn maps the image path rel to a host path under root, following symlinks as if
// root were "/" so that no entry can reach outside the tree. The last component is
// followed only if followLast. With create, missing components are made as directories
// (layers need not list the directories they write into).
func resolveIn(root, rel string, followLast, create bool) (string, error) {
	parts := strings.Split(rel, "/")
	var cur []string
	hops := 0
	for len(parts) > 0 {
		p := parts[0]
		parts = parts[1:]
		switch p {
		case "", ".":
			continue
		case "..":
			if len(cur) > 0 {
				cur = cur[:len(cur)-1]
			}
			continue
		}
		last := len(parts) == 0
		host := filepath.Join(root, filepath.Join(cur...), p)
		fi, err := os.Lstat(host)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) || !create {
				return "", err
			}
			if err := os.Mkdir(host, 0o755); err != nil {
				return "", err
			}
			cur = append(cur, p)
			continue
		}
		if fi.Mode()&fs.ModeSymlink != 0 && (!last || followLast) {
			if hops++; hops > 40 {
				return "", &fs.PathError{Op: "resolve", Path: rel, Err: syscall.ELOOP}
			}
			target, err := os.Readlink(host)
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(target, "/") {
				cur = cur[:0]
			}
			parts = append(strings.Split(target, "/"), parts...)
			continue
		}
		if (!last || create) && !fi.IsDir() {
			return "", &fs.PathError{Op: "resolve", Path: rel, Err: syscall.ENOTDIR}
		}
		cur = append(cur, p)
	}
	return filepath.Join(root, filepath.Join(cur...)), nil
}
