// Package volume keeps named volumes: ext4 disk images under STATE_DIR/volumes that outlive
// the VMs they are attached to, and read-only disks built from host directories.
//
// A volume is a directory NAME holding disk.ext4 (made empty by mkfs.ext4 and never
// mounted by the host: only guests write it), meta.json and lock. A VM holds the volume's
// lock for its whole life — exclusive when attached read-write, shared when read-only — so
// two writers, a writer and readers, or a removal while attached, are refused; the kernel
// drops the lock when the holder dies, however it dies, so nothing is left to clean. Each
// holder also locks users/VM-ID, which is how Inspect knows who has the volume.
//
// Creation builds the volume under a temporary name and renames it into place, removal
// renames it away before deleting it: a crash at any point leaves either a whole volume or
// debris with a dot name that List ignores and Clean removes.
package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/firegopher/firegopher/internal/flock"
	"github.com/firegopher/firegopher/internal/image"
	"github.com/firegopher/firegopher/internal/spec"
)

// Files of a volume's directory.
const (
	DiskFile = "disk.ext4"
	MetaFile = "meta.json"
	LockFile = "lock"
	UsersDir = "users"
)

// Limits of a volume's size: room for ext4's journal, and ext4's limit with 4 KiB blocks.
const (
	MinSize     = 16 * spec.MiB
	MaxSize     = 16 << 40
	DefaultSize = spec.GiB
)

// Features is the ext4 feature set of every volume and directory drive: Ubuntu 22.04's
// (and Debian 12's) mkfs.ext4 defaults, which any guest kernel from 3.18 on mounts,
// whatever this host's mke2fs.conf enables.
const Features = image.FeaturesUbuntu2204

// fsLabel is the filesystem label of volumes (a volume's name may not fit ext4's 16 bytes).
const fsLabel = "firegopher-vol"

// debrisGrace is how long Clean leaves an unlocked dot directory alone: Create is between
// its mkdir and its flock.
const debrisGrace = time.Minute

// Field names in errors.
const (
	FieldName = "volume name"
	FieldSize = "--size"
)

// Store is the volumes of one state directory.
type Store struct {
	Dir string // STATE_DIR/volumes
}

// Volume is what Inspect and List report.
type Volume struct {
	Name    string    `json:"name"`
	Size    spec.Size `json:"size"`
	Created time.Time `json:"created"`
	// Allocated is what the sparse disk file takes on the host's disk.
	Allocated int64  `json:"allocated"`
	Disk      string `json:"disk"`
	// Users are the VMs that have it attached now.
	Users []User `json:"users,omitempty"`
}

// User is a VM that has a volume attached.
type User struct {
	VM       string `json:"vm"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

type meta struct {
	Name    string    `json:"name"`
	Size    spec.Size `json:"size"`
	Created time.Time `json:"created"`
}

func (s *Store) dir(name string) string { return filepath.Join(s.Dir, name) }

// DiskPath is where the disk of volume name is.
func (s *Store) DiskPath(name string) string { return filepath.Join(s.Dir, name, DiskFile) }

func checkName(name string) error {
	_, err := spec.ParseName(FieldName, name)
	return err
}

// errNoVolume says a volume does not exist, naming the command that makes it.
func errNoVolume(name string) error {
	return fmt.Errorf("no volume named %q (make it with: firegopher volume create %s)", name, name)
}

// Create makes volume name: an empty ext4 filesystem of size bytes (sparse on the host).
func (s *Store) Create(ctx context.Context, name string, size spec.Size) (*Volume, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if size < MinSize || size > MaxSize {
		return nil, fmt.Errorf("%s: %s, want %s to %s", FieldSize, size, MinSize, spec.Size(MaxSize))
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(s.dir(name)); err == nil {
		return nil, fmt.Errorf("volume %q already exists", name)
	}
	tmp, err := os.MkdirTemp(s.Dir, ".new-"+name+"-")
	if err != nil {
		return nil, err
	}
	// Locked while it is built, so that Clean leaves it alone; the lock file moves with the
	// directory and becomes the volume's own.
	lock, err := flock.TryLock(filepath.Join(tmp, LockFile))
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	defer lock.Close()
	err = s.build(ctx, tmp, meta{Name: name, Size: size, Created: time.Now().UTC().Truncate(time.Second)})
	if err == nil {
		// rename(2) does not replace a non-empty directory: a concurrent Create of the same
		// name loses here and leaves the winner's volume alone.
		err = os.Rename(tmp, s.dir(name))
		if errors.Is(err, os.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			err = fmt.Errorf("volume %q already exists", name)
		}
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return s.Inspect(name)
}

// build makes the disk and the metadata of a new volume in dir.
func (s *Store) build(ctx context.Context, dir string, m meta) error {
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		return err
	}
	err := image.MakeExt4With(ctx, empty, filepath.Join(dir, DiskFile), image.Ext4Options{Size: int64(m.Size), Features: Features, Label: fsLabel})
	if err != nil {
		return fmt.Errorf("volume %s: %w", m.Name, err)
	}
	if err := os.Remove(empty); err != nil {
		return err
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, MetaFile), append(data, '\n'), 0o600)
}

// Inspect reports volume name.
func (s *Store) Inspect(name string) (*Volume, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(s.dir(name), MetaFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoVolume(name)
	}
	if err != nil {
		return nil, err
	}
	var m meta
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("volume %s: %s: %w", name, MetaFile, err)
	}
	v := &Volume{Name: name, Size: m.Size, Created: m.Created, Disk: s.DiskPath(name)}
	fi, err := os.Stat(v.Disk)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		v.Allocated = st.Blocks * 512
	}
	v.Users = s.users(name)
	return v, nil
}

// users lists the VMs whose supervisors hold their users/VM-ID lock now; files left by
// dead holders are ignored (Attach and Clean remove them when no one can be attaching).
func (s *Store) users(name string) []User {
	dir := filepath.Join(s.dir(name), UsersDir)
	entries, _ := os.ReadDir(dir)
	var users []User
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !flock.Held(p) {
			continue
		}
		mode, _ := os.ReadFile(p)
		users = append(users, User{VM: e.Name(), ReadOnly: strings.TrimSpace(string(mode)) == "ro"})
	}
	return users
}

// List reports every volume, by name.
func (s *Store) List() ([]Volume, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Volume
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue // debris of a Create or Remove that did not finish
		}
		v, err := s.Inspect(e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, nil
}

// Remove deletes volume name and its data; refused while a VM has it attached.
func (s *Store) Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	dir := s.dir(name)
	if _, err := os.Stat(filepath.Join(dir, MetaFile)); errors.Is(err, os.ErrNotExist) {
		return errNoVolume(name)
	}
	lock, err := s.lock(name, false)
	if errors.Is(err, ErrInUse) {
		return fmt.Errorf("%w; stop it first", err)
	}
	if err != nil {
		return err
	}
	defer lock.Close()
	// Renamed away first: the name is free at once, and a crash mid-delete leaves debris.
	tomb, err := os.MkdirTemp(s.Dir, ".rm-"+name+"-")
	if err != nil {
		return err
	}
	if err := os.Rename(dir, filepath.Join(tomb, name)); err != nil {
		os.Remove(tomb)
		return err
	}
	return os.RemoveAll(tomb)
}

// lock takes volume name's lock, exclusive unless shared, and checks it is still the lock
// of the volume by that name (a Remove may have renamed the volume away meanwhile).
func (s *Store) lock(name string, shared bool) (*os.File, error) {
	path := filepath.Join(s.dir(name), LockFile)
	if _, err := os.Stat(filepath.Join(s.dir(name), MetaFile)); errors.Is(err, os.ErrNotExist) {
		return nil, errNoVolume(name)
	}
	take := flock.TryLock
	if shared {
		take = flock.TryLockShared
	}
	f, err := take(path)
	if errors.Is(err, flock.ErrHeld) {
		return nil, s.inUse(name)
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoVolume(name)
	}
	if err != nil {
		return nil, err
	}
	held, err1 := f.Stat()
	now, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(held, now) {
		f.Close()
		return nil, errNoVolume(name)
	}
	return f, nil
}

// ErrInUse is wrapped by the errors of Attach and Remove when a VM has the volume.
var ErrInUse = errors.New("in use")

// inUse says who holds volume name.
func (s *Store) inUse(name string) error {
	users := s.users(name)
	if len(users) == 0 {
		// Between a holder's two locks, or a Remove in progress.
		return fmt.Errorf("volume %q is %w", name, ErrInUse)
	}
	var who []string
	for _, u := range users {
		mode := "read-write"
		if u.ReadOnly {
			mode = "read-only"
		}
		who = append(who, fmt.Sprintf("VM %s (%s)", u.VM, mode))
	}
	return fmt.Errorf("volume %q is %w: attached to running %s", name, ErrInUse, strings.Join(who, ", "))
}

// Attachment is a volume held for one VM: its lock and its users entry.
type Attachment struct {
	Name     string
	Disk     string
	ReadOnly bool
	lock     *os.File
	user     *os.File
}

// Attach takes volume name for VM vmID for as long as the returned attachment (and this
// process) lives: exclusively when read-write, shared with other readers when read-only.
// A volume attached read-write elsewhere, or read-only elsewhere when asked read-write,
// is an error naming the VMs that have it.
func (s *Store) Attach(name, vmID string, readOnly bool) (*Attachment, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	lock, err := s.lock(name, readOnly)
	if err != nil {
		return nil, err
	}
	users := filepath.Join(s.dir(name), UsersDir)
	if !readOnly {
		// Sole holder: every users entry is left by a dead one.
		os.RemoveAll(users)
	}
	if err := os.MkdirAll(users, 0o700); err != nil {
		lock.Close()
		return nil, err
	}
	userPath := filepath.Join(users, vmID)
	user, err := flock.TryLock(userPath)
	if err != nil {
		lock.Close()
		return nil, err
	}
	mode := "rw"
	if readOnly {
		mode = "ro"
	}
	if err := user.Truncate(0); err == nil {
		_, err = user.WriteString(mode + "\n")
	}
	if err != nil {
		os.Remove(userPath)
		user.Close()
		lock.Close()
		return nil, err
	}
	return &Attachment{Name: name, Disk: s.DiskPath(name), ReadOnly: readOnly, lock: lock, user: user}, nil
}

// Release gives the volume back.
func (a *Attachment) Release() error {
	err := os.Remove(a.user.Name())
	a.user.Close()
	a.lock.Close()
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}

// Clean removes what crashed firegopher processes left: unfinished creations and removals,
// and users entries of dead holders of volumes no one holds now. It returns one line per
// item removed.
func (s *Store) Clean() []string {
	entries, _ := os.ReadDir(s.Dir)
	var report []string
	for _, e := range entries {
		p := filepath.Join(s.Dir, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			info, err := e.Info()
			if err != nil || time.Since(info.ModTime()) < debrisGrace || flock.Held(filepath.Join(p, LockFile)) {
				continue
			}
			if os.RemoveAll(p) == nil {
				report = append(report, fmt.Sprintf("volume debris %s: removed", p))
			}
			continue
		}
		if _, err := os.Stat(filepath.Join(p, MetaFile)); err != nil {
			continue // not a volume
		}
		lock, err := flock.TryLock(filepath.Join(p, LockFile))
		if err != nil {
			continue // attached
		}
		stale, _ := os.ReadDir(filepath.Join(p, UsersDir))
		if len(stale) > 0 && os.RemoveAll(filepath.Join(p, UsersDir)) == nil {
			names := make([]string, len(stale))
			for i, u := range stale {
				names[i] = u.Name()
			}
			slices.Sort(names)
			report = append(report, fmt.Sprintf("volume %s: removed the users entries of dead VMs %s", e.Name(), strings.Join(names, ", ")))
		}
		lock.Close()
	}
	return report
}

// BuildReadOnly writes out, an ext4 image of host directory src's contents (owners, modes
// and links kept), for a guest to mount read-only. out must not exist; on error it does
// not exist.
func BuildReadOnly(ctx context.Context, src, out string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("volume %s: %w", src, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("volume %s: not a directory", src)
	}
	return image.MakeExt4With(ctx, src, out, image.Ext4Options{Features: Features, Label: fsLabel})
}
