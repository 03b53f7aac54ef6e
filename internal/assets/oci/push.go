package oci

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/kernel"
)

// DiskFileName is where a pushed image keeps its root filesystem.
const DiskFileName = "rootfs.ext4"

// layerEntry is one file or directory of a layer Push writes: a file's content is the
// blob at path blob or else data; an entry with neither is a directory.
type layerEntry struct {
	name string
	blob string
	data []byte
}

// Push publishes the cached kernel or image kindName ("kernel/NAME" or "image/NAME") as a
// single-layer OCI image at ref (a registry reference, or "oci:<dir>[:tag]" for a local OCI
// layout). A kernel becomes the seed's FROM-scratch layout (/boot/vmlinux, /boot/initrd,
// /lib/modules/<version>/...), an image one /rootfs.ext4: both pull back as they were.
// insecure is Options.Insecure.
func Push(ctx context.Context, store *assets.Store, kindName, ref string, insecure bool) error {
	kind, _, err := splitKindName(kindName)
	if err != nil {
		return err
	}
	dst, err := parseSource(ref, insecure)
	if err != nil {
		return err
	}
	if dst.digest != "" {
		return fmt.Errorf("push %s: push to a tag, not a digest", ref)
	}
	d, err := store.Resolve(kindName)
	if err != nil {
		return err
	}

	var entries []layerEntry
	var cfg v1.Config
	switch kind {
	case KindKernel:
		k, err := store.LoadKernel(d)
		if err != nil {
			return err
		}
		if entries, err = kernelEntries(store, k); err != nil {
			return fmt.Errorf("push %s: %w", kindName, err)
		}
	case KindImage:
		im, err := store.LoadImage(d)
		if err != nil {
			return err
		}
		entries = []layerEntry{{name: DiskFileName, blob: store.Path(im.Rootfs)}}
		if c := im.Config; c != nil {
			cfg = v1.Config{Env: c.Env, Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir, User: c.User}
		}
	}

	work, err := store.TempDir("push-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	layerFile := filepath.Join(work, "layer.tar.gz")
	if err := writeLayer(ctx, layerFile, entries); err != nil {
		return fmt.Errorf("push %s: %w", kindName, err)
	}
	img, err := singleLayerImage(layerFile, cfg, kindName)
	if err != nil {
		return fmt.Errorf("push %s: %w", kindName, err)
	}
	if dst.dir != "" {
		return writeLayout(dst, img)
	}
	if err := remote.Write(dst.ref, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithUserAgent("firegopher")); err != nil {
		return fmt.Errorf("push %s to %s: %w", kindName, dst.display, err)
	}
	return nil
}

func kernelEntries(store *assets.Store, k *assets.Kernel) ([]layerEntry, error) {
	e := []layerEntry{{name: "boot"}, {name: "boot/vmlinux", blob: store.Path(k.Vmlinux)}}
	if k.Initrd != "" {
		if !store.Has(k.Initrd) {
			return nil, fmt.Errorf("initrd %s: %w", k.Initrd.Short(), assets.ErrNotFound)
		}
		e = append(e, layerEntry{name: "boot/initrd", blob: store.Path(k.Initrd)})
	}
	if len(k.Modules) == 0 {
		return e, nil
	}
	if k.Version == "" || k.Version != path.Base(k.Version) {
		return nil, fmt.Errorf("kernel has modules but no usable version (%q) to name /lib/modules/<version>", k.Version)
	}
	base := "lib/modules/" + k.Version
	dirs := []string{"lib", "lib/modules", base}
	var files []layerEntry
	for _, m := range k.Modules {
		p := path.Clean(m.Path)
		if path.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") {
			return nil, fmt.Errorf("module path %q leaves /lib/modules/%s", m.Path, k.Version)
		}
		if !store.Has(m.Digest) {
			return nil, fmt.Errorf("module %s: %w", m.Path, assets.ErrNotFound)
		}
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if dir := base + "/" + d; !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		}
		files = append(files, layerEntry{name: base + "/" + p, blob: store.Path(m.Digest)})
	}
	slices.Sort(dirs) // parents before children
	for _, d := range dirs {
		e = append(e, layerEntry{name: d})
	}
	e = append(e, files...)
	// The cache keeps only the guest modules the kernel needed, so whatever guest module is
	// not among them was built in: say so, or a pull of this image would find it missing.
	var builtin []byte
	for _, g := range kernel.GuestModules {
		if !slices.ContainsFunc(k.Modules, func(m assets.Module) bool { return kernel.Name(m.Path) == kernel.Name(g) }) {
			builtin = append(builtin, "kernel/"+kernel.Name(g)+".ko\n"...)
		}
	}
	return append(e, layerEntry{name: base + "/modules.builtin", data: builtin}), nil
}

// writeLayer writes a gzipped tar of entries with fixed owners, modes and times, so that
// pushing the same asset twice gives the same digest.
func writeLayer(ctx context.Context, out string, entries []layerEntry) error {
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	// Fastest level: disk images are mostly zeros and compress well anyway.
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	epoch := time.Unix(0, 0)
	for _, e := range entries {
		if e.blob == "" && e.data == nil {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: e.name + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return err
			}
			continue
		}
		if err := addFile(ctx, tw, e, epoch); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func addFile(ctx context.Context, tw *tar.Writer, e layerEntry, mtime time.Time) error {
	if e.blob == "" {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(e.data)
		return err
	}
	src, err := os.Open(e.blob)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: fi.Size(), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err = io.Copy(tw, ctxReader{ctx, src})
	return err
}

func singleLayerImage(layerFile string, cfg v1.Config, kindName string) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(layerFile) }, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "firegopher push " + kindName}})
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", runtime.GOARCH, cfg
	return mutate.ConfigFile(img, cf)
}

// writeLayout adds img to an OCI layout directory (made if needed) under its tag.
func writeLayout(dst *source, img v1.Image) error {
	p, err := layout.FromPath(dst.dir)
	if err != nil {
		if p, err = layout.Write(dst.dir, empty.Index); err != nil {
			return fmt.Errorf("oci layout %s: %w", dst.dir, err)
		}
	}
	tag := dst.tag
	if tag == "" {
		tag = "latest"
	}
	plat := hostPlatform()
	if err := p.ReplaceImage(img, match.Annotation(refNameAnnotation, tag), layout.WithAnnotations(map[string]string{refNameAnnotation: tag}), layout.WithPlatform(plat)); err != nil {
		return fmt.Errorf("oci layout %s: %w", dst.dir, err)
	}
	return nil
}

// splitKindName validates "kernel/NAME" or "image/NAME".
func splitKindName(kindName string) (kind, name string, err error) {
	kind, name, _ = strings.Cut(kindName, "/")
	if kind != KindKernel && kind != KindImage || !validName(name) {
		return "", "", fmt.Errorf("%q: want kernel/NAME or image/NAME", kindName)
	}
	return kind, name, nil
}

// validName accepts what the store accepts after "kind/": segments of letters, digits,
// '.', '_', '-' (Pull only makes single segments, other tools may nest).
func validName(name string) bool {
	for _, seg := range strings.Split(name, "/") {
		if !nameSegment.MatchString(seg) {
			return false
		}
	}
	return true
}
