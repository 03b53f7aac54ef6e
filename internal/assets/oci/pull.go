package oci

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/image"
	"github.com/firegopher/firegopher/internal/kernel"
)

type puller struct {
	store *assets.Store
	src   *source
	opts  Options
	log   *slog.Logger
	name  string
	top   string // registry digest of what the ref named
}

func (p *puller) run(ctx context.Context, img v1.Image) (Result, error) {
	work, err := p.store.TempDir("pull-*")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(work)

	cfg, err := img.ConfigFile()
	if err != nil {
		return Result{}, fmt.Errorf("pull %s: config: %w", p.src.display, err)
	}
	if err := checkPlatform(cfg); err != nil {
		return Result{}, fmt.Errorf("pull %s: %w", p.src.display, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return Result{}, fmt.Errorf("pull %s: manifest: %w", p.src.display, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return Result{}, fmt.Errorf("pull %s: %w", p.src.display, err)
	}
	if len(layers) != len(m.Layers) {
		return Result{}, fmt.Errorf("pull %s: manifest lists %d layers, image has %d", p.src.display, len(m.Layers), len(layers))
	}
	// DiffIDs let us check the unpacked bytes too; tolerate configs that omit them.
	diffIDs := cfg.RootFS.DiffIDs
	if len(diffIDs) != len(layers) {
		diffIDs = nil
	}

	tree := filepath.Join(work, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return Result{}, err
	}
	fl := newFlattener(tree, p.log)
	prog := newProgress(p.opts.Progress)
	for i, l := range layers {
		desc := m.Layers[i]
		blob := filepath.Join(work, fmt.Sprintf("layer-%d", i))
		if err := download(ctx, l, desc, blob, prog); err != nil {
			return Result{}, fmt.Errorf("pull %s: %w", p.src.display, err)
		}
		var want v1.Hash
		if diffIDs != nil {
			want = diffIDs[i]
		}
		if err := applyLayerFile(ctx, fl, blob, want); err != nil {
			return Result{}, fmt.Errorf("pull %s: layer %s: %w", p.src.display, shortHash(desc.Digest), err)
		}
		// Free the space now: the tree holds the content.
		os.Remove(blob)
	}
	if err := fl.finish(); err != nil {
		return Result{}, fmt.Errorf("pull %s: %w", p.src.display, err)
	}

	kind := p.opts.Kind
	if kind == "" {
		if kind, err = detectKind(tree, p.src.kernelHint()); err != nil {
			return Result{}, fmt.Errorf("pull %s: %w", p.src.display, err)
		}
	}
	var d assets.Digest
	switch kind {
	case KindKernel:
		d, err = p.storeKernel(ctx, tree)
	default:
		d, err = p.storeImage(ctx, work, tree, cfg)
	}
	if err != nil {
		return Result{}, fmt.Errorf("pull %s: %w", p.src.display, err)
	}
	if err := ctx.Err(); err != nil {
		// Cancelled while storing: do not make anything visible.
		return Result{}, fmt.Errorf("pull %s: %w", p.src.display, err)
	}
	if err := p.store.Tag(kind+"/"+p.name, d); err != nil {
		return Result{}, err
	}
	p.log.Info("pulled", "ref", p.src.display, "as", kind+"/"+p.name, "digest", p.top, "manifest", d.Short())
	return Result{Kind: kind, Name: p.name, Digest: d, ManifestDigest: p.top}, nil
}

// download streams one compressed layer to dst and checks it against its digest before
// anything trusts it.
func download(ctx context.Context, l v1.Layer, desc v1.Descriptor, dst string, prog *progress) (err error) {
	lp := prog.layer(desc.Digest, desc.Size)
	defer func() { lp.done(err) }()
	if desc.Digest.Algorithm != "sha256" {
		return fmt.Errorf("layer %s: unsupported digest algorithm", desc.Digest)
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("layer %s: %w", shortHash(desc.Digest), err)
	}
	defer rc.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h, lp), ctxReader{ctx, rc})
	if ctx.Err() != nil {
		return fmt.Errorf("layer %s: %w", shortHash(desc.Digest), ctx.Err())
	}
	got := hex.EncodeToString(h.Sum(nil))
	// The registry client checks digests too and fails at EOF; report both cases alike.
	if (err == nil || n == desc.Size) && got != desc.Digest.Hex {
		return fmt.Errorf("layer %s: the registry sent %d bytes that do not match the layer's digest (got sha256:%s): corrupt or tampered content, nothing stored", desc.Digest, n, got)
	}
	if err != nil {
		return fmt.Errorf("layer %s: download: %w", shortHash(desc.Digest), err)
	}
	if desc.Size > 0 && n != desc.Size {
		return fmt.Errorf("layer %s: got %d bytes, manifest says %d", desc.Digest, n, desc.Size)
	}
	return f.Close()
}

// applyLayerFile unpacks a verified layer blob onto the tree; when wantDiff is set the
// uncompressed stream must hash to it.
func applyLayerFile(ctx context.Context, fl *flattener, blob string, wantDiff v1.Hash) error {
	f, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer f.Close()
	r, closeFn, err := decompress(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return err
	}
	defer closeFn()
	var h hash.Hash
	if wantDiff.Hex != "" {
		h = sha256.New()
		r = io.TeeReader(r, h)
	}
	if err := fl.apply(ctx, r); err != nil {
		return err
	}
	if h != nil {
		// The tar end marker may be followed by padding that counts towards the diff ID.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != wantDiff.Hex {
			return fmt.Errorf("uncompressed content does not match the config's diff ID %s (got sha256:%s)", wantDiff, got)
		}
	}
	return nil
}

// decompress recognises gzip and zstd by their magic numbers (media types lie in the wild)
// and passes anything else through as a plain tar.
func decompress(br *bufio.Reader) (io.Reader, func(), error) {
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func shortHash(h v1.Hash) string {
	if len(h.Hex) < 12 {
		return h.String()
	}
	return h.Algorithm + ":" + h.Hex[:12]
}

// detectKind: a kernel image holds /boot/vmlinu* and nothing but /boot and /lib/modules;
// a repository named "*-kernel*" is a kernel even with extra files.
func detectKind(tree string, hint bool) (string, error) {
	vm, _ := filepath.Glob(filepath.Join(tree, "boot", "vmlinu*"))
	if len(vm) == 0 {
		if hint {
			return "", errors.New(`the repository's name says kernel ("-kernel") but the image has no /boot/vmlinux or /boot/vmlinuz*; pull it with kind "image" to use it as a root filesystem`)
		}
		return KindImage, nil
	}
	if hint || onlyKernelFiles(tree) {
		return KindKernel, nil
	}
	return KindImage, nil
}

func onlyKernelFiles(tree string) bool {
	top, err := os.ReadDir(tree)
	if err != nil {
		return false
	}
	for _, e := range top {
		switch {
		case e.Name() == "boot" && e.IsDir():
		case e.Name() == "lib" && e.IsDir():
			sub, err := os.ReadDir(filepath.Join(tree, "lib"))
			if err != nil {
				return false
			}
			for _, s := range sub {
				if s.Name() != "modules" || !s.IsDir() {
					return false
				}
			}
		default:
			return false
		}
	}
	return true
}

// storeKernel turns a kernel tree into an assets.Kernel manifest.
func (p *puller) storeKernel(ctx context.Context, tree string) (assets.Digest, error) {
	boot := filepath.Join(tree, "boot")
	vmPath, imgVersion, err := findKernelImage(tree)
	if err != nil {
		return "", err
	}
	raw, err := os.ReadFile(vmPath)
	if err != nil {
		return "", err
	}
	elf, err := kernel.Vmlinux(raw)
	if err != nil {
		return "", fmt.Errorf("kernel /boot/%s: %w", filepath.Base(vmPath), err)
	}
	k := &assets.Kernel{Source: p.src.sourceField(p.top)}
	if k.Vmlinux, err = p.store.PutBytes(elf); err != nil {
		return "", err
	}
	if initrd, err := findInitrd(tree, boot); err != nil {
		return "", err
	} else if initrd != "" {
		if k.Initrd, err = adopt(p.store, initrd); err != nil {
			return "", err
		}
	}
	modDir, version, err := findModules(tree, imgVersion)
	if err != nil {
		return "", err
	}
	k.Version = version
	if modDir != "" {
		mt, err := kernel.OpenModuleTree(modDir)
		if err != nil {
			return "", fmt.Errorf("kernel modules: %w", err)
		}
		if v := mt.Version(); v != "" {
			k.Version = v
		}
		mods, err := mt.Resolve(kernel.GuestModules)
		if err != nil {
			if k.Initrd == "" {
				return "", fmt.Errorf("kernel modules: %w", err)
			}
			// Its own initrd loads what it needs, so it still boots system VMs; app VMs,
			// which boot through firegopher's initrd, will say what is missing.
			p.log.Warn("kernel stored without guest modules: app VMs cannot use it", "ref", p.src.display, "error", err)
			mods = nil
		}
		for _, m := range mods {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			data, err := mt.Open(m)
			if err != nil {
				return "", fmt.Errorf("kernel module %s: %w", m.Name, err)
			}
			d, err := p.store.PutBytes(data)
			if err != nil {
				return "", err
			}
			// Open decompresses, so the stored path names the plain .ko (as ImportKernelDeb does).
			k.Modules = append(k.Modules, assets.Module{Path: strings.TrimSuffix(strings.TrimSuffix(m.Path, ".xz"), ".zst"), Digest: d})
		}
	}
	p.log.Info("kernel stored", "version", k.Version, "modules", len(k.Modules), "initrd", k.Initrd != "")
	return p.store.PutJSON(k)
}

// findKernelImage prefers /boot/vmlinux (the seed's name), then /boot/vmlinuz, then a single
// versioned vmlinu[xz]-<version>, whose version it returns.
func findKernelImage(tree string) (string, string, error) {
	for _, n := range []string{"vmlinux", "vmlinuz"} {
		if p, ok := regularIn(tree, "boot/"+n); ok {
			return p, "", nil
		}
	}
	var found []string
	for _, pat := range []string{"vmlinux-*", "vmlinuz-*"} {
		m, _ := filepath.Glob(filepath.Join(tree, "boot", pat))
		found = append(found, m...)
	}
	var regular, names []string
	for _, m := range found {
		if p, ok := regularIn(tree, "boot/"+filepath.Base(m)); ok {
			regular, names = append(regular, p), append(names, filepath.Base(m))
		}
	}
	switch len(regular) {
	case 0:
		return "", "", errors.New("kernel image: no /boot/vmlinux or /boot/vmlinuz*")
	case 1:
		return regular[0], names[0][len("vmlinux-"):], nil
	}
	return "", "", fmt.Errorf("kernel image: %d kernels in /boot (%s), want one", len(regular), strings.Join(names, ", "))
}

// findInitrd returns the image's own initramfs, if any.
func findInitrd(tree, boot string) (string, error) {
	if p, ok := regularIn(tree, "boot/initrd"); ok {
		return p, nil
	}
	var found []string
	for _, pat := range []string{"initrd.img*", "initrd-*", "initramfs*"} {
		m, _ := filepath.Glob(filepath.Join(boot, pat))
		for _, f := range m {
			if p, ok := regularIn(tree, "boot/"+filepath.Base(f)); ok && !slices.Contains(found, p) {
				found = append(found, p)
			}
		}
	}
	if len(found) > 1 {
		return "", fmt.Errorf("kernel image: %d initrds in /boot, want at most one", len(found))
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return "", nil
}

// findModules picks /lib/modules/<version>; with several versions, the kernel's own.
func findModules(tree, imgVersion string) (dir, version string, err error) {
	entries, err := os.ReadDir(filepath.Join(tree, "lib", "modules"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", imgVersion, nil
	} else if err != nil {
		return "", "", err
	}
	var versions []string
	for _, e := range entries {
		if e.IsDir() {
			versions = append(versions, e.Name())
		}
	}
	switch {
	case len(versions) == 0:
		return "", imgVersion, nil
	case len(versions) == 1:
		version = versions[0]
	case slices.Contains(versions, imgVersion):
		version = imgVersion
	default:
		return "", "", fmt.Errorf("kernel image: /lib/modules has %d versions (%s) and /boot does not say which is the kernel's", len(versions), strings.Join(versions, ", "))
	}
	return filepath.Join(tree, "lib", "modules", version), version, nil
}

// regularIn resolves rel inside tree (symlinks as if tree were /) and says whether it is a
// regular file.
func regularIn(tree, rel string) (string, bool) {
	p, err := resolveIn(tree, rel, true, false)
	if err != nil {
		return "", false
	}
	fi, err := os.Lstat(p)
	return p, err == nil && fi.Mode().IsRegular()
}

// storeImage stores the image's shipped disk file, or makes one from the tree.
func (p *puller) storeImage(ctx context.Context, work, tree string, cfg *v1.ConfigFile) (assets.Digest, error) {
	im := &assets.Image{Source: p.src.sourceField(p.top), Config: runConfig(cfg)}
	disk, err := shippedDisk(tree)
	if err != nil {
		return "", err
	}
	if disk != "" {
		if err := checkExt4(disk); err != nil {
			return "", err
		}
		p.log.Info("image ships its own disk", "file", strings.TrimPrefix(disk, tree))
	} else {
		disk = filepath.Join(work, "rootfs.ext4")
		p.log.Info("building ext4 root filesystem", "ref", p.src.display)
		if err := image.MakeExt4With(ctx, tree, disk, image.Ext4Options{Size: p.opts.DiskSize, Features: p.opts.Features}); err != nil {
			return "", err
		}
		// The tree is in the image now; give its space back before hashing.
		os.RemoveAll(tree)
	}
	if im.Rootfs, err = adopt(p.store, disk); err != nil {
		return "", err
	}
	return p.store.PutJSON(im)
}

func runConfig(cfg *v1.ConfigFile) *assets.ImageConfig {
	c := cfg.Config
	rc := &assets.ImageConfig{Env: c.Env, Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir, User: c.User}
	if len(rc.Env) == 0 && len(rc.Entrypoint) == 0 && len(rc.Cmd) == 0 && rc.WorkingDir == "" && rc.User == "" {
		return nil
	}
	return rc
}

// shippedDisk returns the tree's disk file when the tree holds exactly one regular file,
// named *.ext4 or *.img, and nothing else but directories.
func shippedDisk(tree string) (string, error) {
	var disk string
	other := false
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return nil
		case d.Type().IsRegular() && disk == "" && (strings.HasSuffix(d.Name(), ".ext4") || strings.HasSuffix(d.Name(), ".img")):
			disk = p
			return nil
		}
		other = true
		return filepath.SkipAll
	})
	if err != nil || other {
		return "", err
	}
	return disk, nil
}

// checkExt4 looks for the ext2/3/4 superblock magic: a qcow2 or partitioned .img cannot be
// a VM's root disk as it is.
func checkExt4(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 1024+0x38); err != nil || binary.LittleEndian.Uint16(magic[:]) != 0xEF53 {
		return fmt.Errorf("disk file %s is not an ext4 filesystem image (no superblock magic); firegopher needs a raw ext4 image", filepath.Base(path))
	}
	return nil
}

// adopt moves a file of ours (under tmp/) into the store rather than copying it. It gets a
// fresh mtime first: a file unpacked from a layer carries the image's old one, and GC spares
// only recent untagged blobs until Pull tags them.
func adopt(store *assets.Store, path string) (assets.Digest, error) {
	now := time.Now()
	if err := os.Chtimes(path, now, now); err != nil {
		return "", err
	}
	return store.Adopt(path)
}
