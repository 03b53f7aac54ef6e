package oci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/firegopher/firegopher/internal/assets"
)

// Entry is one cached kernel or image, as `firegopher images` lists them.
type Entry struct {
	Kind    string        // "kernel" or "image"
	Name    string        // the ref is Kind+"/"+Name
	Digest  assets.Digest // manifest blob
	Source  string        // where it came from: "oci:<ref>@<digest>", "deb:...", "recipe:...", ...
	Version string        // kernel version, if known
	// Size is the apparent size of the blobs the manifest references (vmlinux, initrd and
	// modules, or the rootfs); DiskUsage is what they occupy (disk images are sparse).
	Size      int64
	DiskUsage int64
	Tagged    time.Time // when the ref was last set
	// Problem says why the entry is unusable (a blob is missing), "" when it is fine.
	Problem string
}

// List returns the store's kernel/* and image/* refs, sorted by kind and name.
func List(store *assets.Store) ([]Entry, error) {
	var out []Entry
	for _, kind := range []string{KindKernel, KindImage} {
		dir := filepath.Join(store.Root(), "refs", kind)
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return filepath.SkipDir
			}
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			out = append(out, entry(store, kind, filepath.ToSlash(rel), d))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return strings.Compare(a.Kind+"/"+a.Name, b.Kind+"/"+b.Name)
	})
	return out, nil
}

func entry(store *assets.Store, kind, name string, d fs.DirEntry) Entry {
	e := Entry{Kind: kind, Name: name}
	if fi, err := d.Info(); err == nil {
		e.Tagged = fi.ModTime()
	}
	dg, err := store.Resolve(kind + "/" + name)
	if err != nil {
		e.Problem = err.Error()
		return e
	}
	e.Digest = dg
	var m manifest
	if err := store.GetJSON(dg, &m); err != nil {
		e.Problem = err.Error()
		return e
	}
	e.Source, e.Version = m.Source, m.Version
	for _, p := range m.parts() {
		size, usage, err := blobSize(store, p)
		if err != nil {
			e.Problem = fmt.Sprintf("blob %s: %v", p.Short(), assets.ErrNotFound)
			continue
		}
		e.Size += size
		e.DiskUsage += usage
	}
	if e.Problem == "" && m.Vmlinux == "" && m.Rootfs == "" {
		e.Problem = "manifest names no vmlinux or rootfs"
	}
	return e
}

func blobSize(store *assets.Store, d assets.Digest) (size, usage int64, err error) {
	fi, err := os.Stat(store.Path(d))
	if err != nil {
		return 0, 0, err
	}
	usage = fi.Size()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		usage = st.Blocks * 512
	}
	return fi.Size(), usage, nil
}

// Remove untags kindName ("kernel/NAME" or "image/NAME"); GC frees its blobs later.
func Remove(store *assets.Store, kindName string) error {
	if _, _, err := splitKindName(kindName); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(store.Root(), "refs", filepath.FromSlash(kindName)))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", kindName, assets.ErrNotFound)
	}
	return err
}

// GCGrace protects recent blobs: a pull or build in flight has written blobs it has not
// tagged yet.
var GCGrace = 5 * time.Minute

// maxManifest bounds the blobs GC reads to look for references; manifests are small,
// disk images and kernels are not JSON.
const maxManifest = 16 << 20

var digestRef = regexp.MustCompile(`sha256:[0-9a-f]{64}`)

// GC removes blobs that no ref reaches and that are older than GCGrace. Every ref counts
// (kernel/, image/ and whatever else other parts of firegopher tag), and any digest a
// reachable JSON manifest mentions is reachable, so GC needs no knowledge of manifest types.
func GC(store *assets.Store) (removed []assets.Digest, err error) {
	live := map[assets.Digest]bool{}
	var queue []assets.Digest
	refs := filepath.Join(store.Root(), "refs")
	err = filepath.WalkDir(refs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if dg, err := assets.ParseDigest(strings.TrimSpace(string(b))); err == nil && !live[dg] {
			live[dg] = true
			queue = append(queue, dg)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	for len(queue) > 0 {
		dg := queue[0]
		queue = queue[1:]
		b, err := readManifest(store.Path(dg))
		if err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
		for _, m := range digestRef.FindAll(b, -1) {
			if ref := assets.Digest(m); !live[ref] {
				live[ref] = true
				queue = append(queue, ref)
			}
		}
	}

	blobs := filepath.Join(store.Root(), "blobs", "sha256")
	entries, err := os.ReadDir(blobs)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	cutoff := time.Now().Add(-GCGrace)
	for _, e := range entries {
		dg, err := assets.ParseDigest("sha256:" + e.Name())
		if err != nil || live[dg] {
			continue // not ours to judge, or in use
		}
		fi, err := e.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(blobs, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("gc: %w", err)
		}
		removed = append(removed, dg)
	}
	return removed, nil
}

// readManifest returns a blob's bytes if it looks like JSON, nil otherwise.
func readManifest(p string) ([]byte, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // a dangling ref: nothing to follow
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() > maxManifest {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' && t[0] != '[' {
		return nil, nil
	}
	return b, nil
}

// CleanTmp removes entries of the store's tmp directory untouched for longer than
// olderThan: what a crashed or killed pull or build left behind. Pick a generous olderThan
// (hours): a running pull's directory can look idle while one large layer downloads.
func CleanTmp(store *assets.Store, olderThan time.Duration) (removed []string, err error) {
	tmp := filepath.Join(store.Root(), "tmp")
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return nil, err
	}
	cutoff := time.Now().Add(-olderThan)
	for _, e := range entries {
		p := filepath.Join(tmp, e.Name())
		if newest, err := newestMtime(p); err != nil || newest.After(cutoff) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return removed, err
		}
		removed = append(removed, p)
	}
	return removed, nil
}

// newestMtime is the latest modification time anywhere under p.
func newestMtime(p string) (time.Time, error) {
	var newest time.Time
	err := filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if fi, err := d.Info(); err == nil && fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
		return nil
	})
	return newest, err
}
