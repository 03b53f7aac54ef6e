package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/firegopher/firegopher/internal/flock"
)

// TemplateKey is everything a snapshot template's saved guest depends on. A VM restores
// from a template only when every field matches; a template whose inputs changed is never
// used, and Diff names what changed.
type TemplateKey struct {
	// Backend is the VMM, its exact version and the template device set (TemplateID).
	Backend string `json:"backend"`
	// Kernel is the kernel's digest (vmlinux and modules), Initrd the base initramfs's
	// (firegopher-init and the module list).
	Kernel    string `json:"kernel"`
	Initrd    string `json:"initrd"`
	Cmdline   string `json:"cmdline"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	// RootSize is the root disk's size in bytes: the template's guest has probed its
	// device already.
	RootSize int64 `json:"root_size"`
	// Devices is the device set of a backend whose templates hold the VM's devices
	// (vmm.TemplateDeviceSet); "" for one that attaches them at a restore.
	Devices string `json:"devices,omitempty"`
}

// Name is the template's directory name: a digest of the whole key.
func (k TemplateKey) Name() string {
	b, _ := json.Marshal(k)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Diff names the fields (by their JSON names) in which k and o differ.
func (k TemplateKey) Diff(o TemplateKey) []string {
	var out []string
	a, b := reflect.ValueOf(k), reflect.ValueOf(o)
	for i := 0; i < a.NumField(); i++ {
		if a.Field(i).Interface() != b.Field(i).Interface() {
			name, _, _ := strings.Cut(a.Type().Field(i).Tag.Get("json"), ",")
			out = append(out, name)
		}
	}
	return out
}

// Files of a template directory besides the backend's own.
const (
	TemplateKeyFile = "key.json"
	templateTmp     = ".tmp-"
	templateLock    = ".lock"
)

// Templates is the cache of snapshot templates: one directory per key, complete or absent.
// A template is built in a scratch directory and renamed into place with its key written
// last; a per-key lock makes racing first runs build it once. A creator killed midway
// leaves only scratch, which the next creator of that key (or GC) removes.
type Templates struct {
	Dir string
	Log *slog.Logger
}

// TemplatesDir is where Host keeps its templates.
func (h *Host) TemplatesDir() string { return filepath.Join(h.CacheDir(), "templates") }

// Templates is this host's template cache.
func (h *Host) Templates() *Templates { return &Templates{Dir: h.TemplatesDir(), Log: h.Log} }

// Template is one cached template.
type Template struct {
	Name    string      `json:"name"`
	Key     TemplateKey `json:"key"`
	Size    int64       `json:"size"`
	Created time.Time   `json:"created"`
}

// Path is the directory of k's template (which may not exist).
func (t *Templates) Path(k TemplateKey) string { return filepath.Join(t.Dir, k.Name()) }

// Lookup returns the directory of k's template, or "" when there is none.
func (t *Templates) Lookup(k TemplateKey) string {
	dir := t.Path(k)
	got, err := readKey(dir)
	if err != nil || got != k {
		return ""
	}
	return dir
}

// Ensure returns the directory of k's template, building it with create (which fills the
// scratch directory it is given) if there is none yet. Concurrent callers, in this process
// or others, wait for one build; created says whether this call built it.
func (t *Templates) Ensure(ctx context.Context, k TemplateKey, create func(ctx context.Context, dir string) error) (dir string, created bool, err error) {
	if dir := t.Lookup(k); dir != "" {
		return dir, false, nil
	}
	if err := os.MkdirAll(t.Dir, 0o755); err != nil {
		return "", false, err
	}
	name := k.Name()
	lock, err := flock.Lock(ctx, filepath.Join(t.Dir, name+templateLock))
	if err != nil {
		return "", false, err
	}
	defer lock.Close()
	if dir := t.Lookup(k); dir != "" {
		return dir, false, nil // built while we waited
	}
	for _, reason := range t.staleReasons(k) {
		t.Log.Debug("snapshot template stale", "template", reason.name, "differs", reason.fields)
	}
	// Scratch of a creator that died: we hold its key's lock, so nobody owns it.
	old, _ := filepath.Glob(filepath.Join(t.Dir, templateTmp+name+"-*"))
	for _, p := range old {
		os.RemoveAll(p)
	}
	// A half-written final directory can only come from a layout without the key file.
	os.RemoveAll(t.Path(k))
	tmp, err := os.MkdirTemp(t.Dir, templateTmp+name+"-")
	if err != nil {
		return "", false, err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := create(ctx, tmp); err != nil {
		return "", false, err
	}
	if err := syncFiles(tmp); err != nil {
		return "", false, err
	}
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return "", false, err
	}
	if err := writeSynced(filepath.Join(tmp, TemplateKeyFile), b); err != nil {
		return "", false, err
	}
	if err := os.Rename(tmp, t.Path(k)); err != nil {
		return "", false, err
	}
	return t.Path(k), true, nil
}

type staleReason struct {
	name   string
	fields []string
}

// staleReasons compares k with every cached template: which inputs made each of them
// unusable for k.
func (t *Templates) staleReasons(k TemplateKey) []staleReason {
	list, _ := t.List()
	var out []staleReason
	for _, tpl := range list {
		if d := tpl.Key.Diff(k); len(d) > 0 {
			out = append(out, staleReason{tpl.Name, d})
		}
	}
	return out
}

// List returns the complete templates.
func (t *Templates) List() ([]Template, error) {
	entries, err := os.ReadDir(t.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Template
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(t.Dir, e.Name())
		k, err := readKey(dir)
		if err != nil {
			continue // not complete: GC removes it
		}
		tpl := Template{Name: e.Name(), Key: k}
		filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
					tpl.Size += fi.Size()
					if d.Name() == TemplateKeyFile {
						tpl.Created = fi.ModTime()
					}
				}
			}
			return nil
		})
		out = append(out, tpl)
	}
	return out, nil
}

// GC removes the templates keep rejects (nil keeps none), incomplete ones and the scratch of
// dead creators; a template or scratch whose key is locked (being built) is left alone.
// A VM restoring from a removed template has it open already and is not disturbed.
func (t *Templates) GC(keep func(Template) bool) ([]string, error) {
	entries, err := os.ReadDir(t.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		name := strings.TrimPrefix(e.Name(), templateTmp)
		if i := strings.IndexByte(name, '-'); i > 0 && strings.HasPrefix(e.Name(), templateTmp) {
			name = name[:i]
		}
		lock, err := flock.TryLock(filepath.Join(t.Dir, name+templateLock))
		if err != nil {
			continue // being built
		}
		dir := filepath.Join(t.Dir, e.Name())
		k, kerr := readKey(dir)
		if kerr == nil && !strings.HasPrefix(e.Name(), ".") && keep != nil && keep(Template{Name: e.Name(), Key: k}) {
			lock.Close()
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		} else {
			// The lock file stays: removing it would let a waiter on the old file and
			// a newcomer on a new one build the same key at once.
			removed = append(removed, dir)
		}
		lock.Close()
	}
	return removed, errors.Join(errs...)
}

func readKey(dir string) (TemplateKey, error) {
	var k TemplateKey
	b, err := os.ReadFile(filepath.Join(dir, TemplateKeyFile))
	if err != nil {
		return k, err
	}
	if err := json.Unmarshal(b, &k); err != nil {
		return k, fmt.Errorf("%s: %w", filepath.Join(dir, TemplateKeyFile), err)
	}
	return k, nil
}

// syncFiles flushes the regular files in dir (the backend's saved state) to disk.
func syncFiles(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// writeSynced writes a file and flushes it, so a crash after the rename never leaves a
// template whose key is there but whose state is not.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
