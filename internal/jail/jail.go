// Package jail prepares and removes what Firecracker's jailer runs a VM in: an owner (uid
// and gid) from an allocated range, the chroot the jailer will enter with every file the VM
// needs placed inside it, the jailer's argument list, cgroup limits, and the cleanup that
// the jailer leaves to its caller ("It's up to the user to handle cleanup", docs/jailer.md).
//
// Layout, as the jailer builds it: <base>/<exec file name>/<id>/root. The exec file is
// named "firecracker" (releases before 1.13 refuse any name without it, and every release
// names the chroot after it). The base lives under the state directory, so that files are
// hard-linked into the chroot rather than copied; shared cache files are linked and never
// chowned (a chown would change the shared inode), the VM's own writable disks are linked
// and given to the jail's owner, mode 0600.
package jail

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ExecName is the name the jailer sees Firecracker under.
const ExecName = "firecracker"

// Jail is one VM's chroot.
type Jail struct {
	// Base is --chroot-base-dir: absolute and canonical (the jailer canonicalizes it).
	Base string
	// ExecFile is --exec-file; its canonical base name is the chroot's middle directory.
	ExecFile string
	// ID is --id: the VM's id, 1 to 64 letters, digits and '-'.
	ID    string
	Owner Owner
}

// ValidateID applies the jailer's rule for --id (src/utils/src/validators.rs).
func ValidateID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("jail id %q: want 1 to 64 characters", id)
	}
	for _, r := range id {
		if r != '-' && !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return fmt.Errorf("jail id %q: want only letters, digits and '-'", id)
		}
	}
	return nil
}

// Validate checks what the jailer itself would reject, and uid/gid 0.
func (j *Jail) Validate() error {
	if err := ValidateID(j.ID); err != nil {
		return err
	}
	switch {
	case !filepath.IsAbs(j.Base):
		return fmt.Errorf("jail base %q: want an absolute path", j.Base)
	case j.ExecFile == "":
		return errors.New("jail exec file: empty")
	case j.Owner.UID <= 0 || j.Owner.GID <= 0:
		return fmt.Errorf("jail owner %d:%d: never root, want allocated ids", j.Owner.UID, j.Owner.GID)
	}
	return nil
}

// Dir is <base>/<exec name>/<id>: everything the jail has, removed as a whole.
func (j *Jail) Dir() string {
	return filepath.Join(j.Base, filepath.Base(j.ExecFile), j.ID)
}

// Root is the chroot: "/" inside the jail.
func (j *Jail) Root() string { return filepath.Join(j.Dir(), "root") }

// HostPath is where the host reaches the jail's path inJail ("/firecracker.sock").
func (j *Jail) HostPath(inJail string) string {
	return filepath.Join(j.Root(), filepath.Clean("/"+inJail))
}

// ErrStale is wrapped by Create when the jail's directory already exists: a VM of this id
// did not end cleanly, and the jailer would refuse its pid file.
var ErrStale = errors.New("the jail directory exists")

// Create makes the chroot (root-owned, 0700; the jailer gives "/" to the owner).
func (j *Jail) Create() error {
	if err := j.Validate(); err != nil {
		return err
	}
	if _, err := os.Lstat(j.Dir()); err == nil {
		return fmt.Errorf("jail %s: %w (left by a VM that did not end cleanly: run firegopher gc)", j.Dir(), ErrStale)
	}
	if err := os.MkdirAll(filepath.Dir(j.Dir()), 0o755); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := os.Mkdir(j.Dir(), 0o700); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := os.Mkdir(j.Root(), 0o700); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	return nil
}

// Kinds of placed files.
type Kind int

const (
	// Shared is a file other VMs use too (a cached kernel, a base image): hard-linked, or
	// copied read-only when linking fails; never chowned. It must be readable by others.
	Shared Kind = iota
	// Owned is the VM's own writable file (its rootfs clone): hard-linked, then given to the
	// jail's owner with mode 0600. It must be on the base's file system: a copy would not
	// be the file the caller kept.
	Owned
)

// Place makes src available in the jail as /name and returns that in-jail path.
func (j *Jail) Place(src, name string, kind Kind) (string, error) {
	if name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("jail: place %s: name %q: want a plain file name", src, name)
	}
	dst := j.HostPath(name)
	err := os.Link(src, dst)
	switch {
	case err == nil:
	case kind == Owned:
		return "", fmt.Errorf("jail: place %s: %w (a writable disk must be on the file system of the jail base %s)", src, err, j.Base)
	default:
		if err := copyFile(src, dst, 0o444); err != nil {
			return "", fmt.Errorf("jail: place %s: %w", src, err)
		}
	}
	if kind == Owned {
		if err := os.Chown(dst, j.Owner.UID, j.Owner.GID); err != nil {
			return "", fmt.Errorf("jail: place %s: %w", src, err)
		}
		if err := os.Chmod(dst, 0o600); err != nil {
			return "", fmt.Errorf("jail: place %s: %w", src, err)
		}
	}
	return "/" + name, nil
}

// Own gives an existing file of the jail (a socket the host listens on) to the owner.
func (j *Jail) Own(inJail string) error {
	if err := os.Lchown(j.HostPath(inJail), j.Owner.UID, j.Owner.GID); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	return nil
}

// Remove deletes the jail. Owned files are links of the caller's files: they are given
// back to root first (so no file outside the jail stays owned by a uid that will be handed
// to another VM). Safe to repeat; the jailer's own mounts live and die in its private mount
// namespace, so a plain recursive removal is safe once Firecracker is gone.
func (j *Jail) Remove() error {
	root := j.Root()
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok && st.Nlink > 1 && int(st.Uid) == j.Owner.UID {
			return os.Lchown(p, 0, 0)
		}
		return nil
	})
	if rerr := os.RemoveAll(j.Dir()); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("jail: remove %s: %w", j.Dir(), err)
	}
	return nil
}

// ExecFile returns a path the jailer can be given for bin: bin itself if its canonical
// name is ExecName, else <base>/bin/<tag>/firecracker, a hard link to bin (a copy when
// linking fails), replaced atomically when it is not bin's content.
func ExecFile(base, bin, tag string) (string, error) {
	canon, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return "", fmt.Errorf("jail: exec file: %w", err)
	}
	if filepath.Base(canon) == ExecName {
		return canon, nil
	}
	if tag == "" || strings.ContainsAny(tag, "/\x00") || tag == "." || tag == ".." {
		return "", fmt.Errorf("jail: exec file tag %q: want a plain name (the version)", tag)
	}
	dir := filepath.Join(base, "bin", tag)
	dst := filepath.Join(dir, ExecName)
	if same, err := sameContent(canon, dst); err != nil {
		return "", fmt.Errorf("jail: exec file: %w", err)
	} else if same {
		return dst, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("jail: exec file: %w", err)
	}
	tmp := filepath.Join(dir, "."+ExecName+"."+strconv.Itoa(os.Getpid()))
	os.Remove(tmp)
	if err := os.Link(canon, tmp); err != nil {
		if err := copyFile(canon, tmp, 0o555); err != nil {
			return "", fmt.Errorf("jail: exec file: %w", err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("jail: exec file: %w", err)
	}
	return dst, nil
}

// sameContent says whether b is a or holds the same bytes.
func sameContent(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if os.SameFile(fa, fb) {
		return true, nil
	}
	if fa.Size() != fb.Size() {
		return false, nil
	}
	ha, err := fileSum(a)
	if err != nil {
		return false, err
	}
	hb, err := fileSum(b)
	return err == nil && ha == hb, err
}

func fileSum(p string) ([32]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(dst)
		return err
	}
	return os.Chmod(dst, mode)
}

// Args is what the jailer is asked for beyond the jail itself.
type Args struct {
	// Cgroup are the cgroup arguments (CgroupArgs or NoCgroupArgs): --cgroup-version is
	// always given, since the jailer's default is v1.
	Cgroup []string
	// NetNS is a network namespace to join ("/run/netns/fg-<id>"); "" for none.
	NetNS string
	// NoFile is --resource-limit no-file (the jailer's default is 2048); 0 keeps it.
	NoFile int
	// Firecracker is Firecracker's own argument list (after "--").
	Firecracker []string
}

// JailerArgs is the jailer's argument list (without argv[0]). Never --daemonize (the caller
// owns the process and its exit status) and never --new-pid-ns (with it the jailer exits at
// once and Firecracker is not the caller's child): start the jailer with CLONE_NEWPID
// instead, and it execs Firecracker in place as pid 1 of the new namespace.
func (j *Jail) JailerArgs(a Args) []string {
	args := []string{
		"--id", j.ID,
		"--exec-file", j.ExecFile,
		"--uid", strconv.Itoa(j.Owner.UID),
		"--gid", strconv.Itoa(j.Owner.GID),
		"--chroot-base-dir", j.Base,
	}
	if a.NetNS != "" {
		args = append(args, "--netns", a.NetNS)
	}
	if a.NoFile > 0 {
		args = append(args, "--resource-limit", "no-file="+strconv.Itoa(a.NoFile))
	}
	args = append(args, a.Cgroup...)
	return append(append(args, "--"), a.Firecracker...)
}
