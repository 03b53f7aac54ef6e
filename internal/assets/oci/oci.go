// Package oci pulls kernels and root filesystems from OCI registries (and local OCI layouts)
// into the asset store, and publishes cached ones back.
//
// What an image holds decides what it becomes:
//   - a kernel image (FROM scratch: /boot/vmlinux or /boot/vmlinuz*, optional /boot/initrd,
//     optional /lib/modules/<version>/) becomes an assets.Kernel tagged "kernel/<name>";
//   - an image that ships exactly one raw *.ext4 / *.img disk file becomes an assets.Image
//     whose rootfs is that file, tagged "image/<name>";
//   - any other container image is flattened (OCI whiteouts honoured) and turned into an
//     ext4 file, tagged "image/<name>", with its run defaults in Image.Config.
//
// Layers are streamed to disk and checked against their digests before they are unpacked;
// everything is built under the store's tmp directory and only the final Tag makes it
// visible, so a failed or interrupted pull leaves nothing behind but unreferenced blobs
// (which GC removes).
package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/image"
)

// Kinds of pulled assets; they are also the first part of their refs in the store.
const (
	KindKernel = "kernel"
	KindImage  = "image"
)

// Options tune Pull.
type Options struct {
	// Name is the local name (the part after "kernel/" or "image/"); default LocalName(ref).
	Name string
	// Kind forces "kernel" or "image"; "" detects it from the image's content.
	Kind string
	// DiskSize is the size in bytes of the ext4 file made from a container image; 0 sizes
	// it from the content. Images that ship their own disk file keep its size.
	DiskSize int64
	// Features is that ext4 file's feature set (image.FeaturesLegacy for the oldest guests);
	// the zero value takes the host's mke2fs defaults.
	Features image.Ext4Features
	// Insecure lets the registry speak plain HTTP; loopback registries (localhost,
	// 127.0.0.0/8, ::1) always may.
	Insecure bool
	// Progress receives per-layer progress; nil is quiet.
	Progress io.Writer
	// Log receives debug and info records; nil discards them.
	Log *slog.Logger
}

// Result says what Pull stored.
type Result struct {
	Kind string // "kernel" or "image"
	Name string // local name: the asset is ref Kind+"/"+Name
	// Digest is the stored manifest blob (assets.Kernel or assets.Image JSON).
	Digest assets.Digest
	// ManifestDigest is the registry's digest of what ref named (the index for multi-platform
	// images), usable to pin the ref as repo@digest.
	ManifestDigest string
	// Cached is true when the ref already resolved to the same registry digest and nothing
	// was downloaded.
	Cached bool
}

// source is a parsed pull or push location: a registry reference or a local OCI layout.
type source struct {
	display string         // canonical form, used in Source fields and lock names
	repo    string         // repository path (for names and the "-kernel" hint)
	tag     string         // "" when pinned by digest only
	digest  string         // "sha256:..." when given in the ref
	ref     name.Reference // registry refs
	dir     string         // OCI layout directory
}

// layoutRef matches "oci:<dir>" / "oci-layout:<dir>" with an explicit path, so that it cannot
// be mistaken for a Docker Hub repository called "oci" (tags never start with '/' or '.').
var layoutRef = regexp.MustCompile(`^oci(-layout)?:([./].*)$`)

// annotation naming an image inside an OCI layout's index (what skopeo and buildkit write).
const refNameAnnotation = "org.opencontainers.image.ref.name"

func parseSource(ref string, insecure bool) (*source, error) {
	if m := layoutRef.FindStringSubmatch(ref); m != nil {
		return parseLayoutSource(m[2])
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	if insecure || loopbackRegistry(r.Context().RegistryStr()) {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return nil, fmt.Errorf("image reference %q: %w", ref, err)
		}
	}
	s := &source{display: r.Name(), repo: r.Context().RepositoryStr(), ref: r}
	switch r := r.(type) {
	case name.Tag:
		s.tag = r.TagStr()
	case name.Digest:
		s.digest = r.DigestStr()
	}
	return s, nil
}

// loopbackRegistry: a registry on this host may speak plain HTTP, as docker allows.
func loopbackRegistry(hostPort string) bool {
	host := hostPort
	if h, _, err := net.SplitHostPort(hostPort); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// parseLayoutSource splits "<dir>[:tag][@sha256:...]".
func parseLayoutSource(spec string) (*source, error) {
	s := &source{}
	if i := strings.LastIndex(spec, "@"); i >= 0 {
		d, err := assets.ParseDigest(spec[i+1:])
		if err != nil {
			return nil, fmt.Errorf("oci layout %q: %w", spec, err)
		}
		s.digest, spec = string(d), spec[:i]
	}
	// A ':' after the last '/' separates a tag from the directory.
	if i := strings.LastIndex(spec, ":"); i > strings.LastIndex(spec, "/") {
		s.tag, spec = spec[i+1:], spec[:i]
		if s.tag == "" {
			return nil, fmt.Errorf("oci layout %q: empty tag", spec)
		}
	}
	if spec == "" {
		return nil, errors.New("oci layout: empty directory")
	}
	// Absolute, so that the Source field names the same layout from any directory.
	dir, err := filepath.Abs(spec)
	if err != nil {
		return nil, fmt.Errorf("oci layout %q: %w", spec, err)
	}
	s.dir = dir
	s.repo = filepath.Base(dir)
	s.display = "oci:" + s.dir
	if s.tag != "" {
		s.display += ":" + s.tag
	}
	if s.digest != "" {
		s.display += "@" + s.digest
	}
	return s, nil
}

var nameSegment = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)

// LocalName is the default local name of an image reference: the last part of the
// repository and the tag ("debian:bookworm" → "debian-bookworm", "alpine" → "alpine",
// "repo@sha256:abcd…" → "repo-abcd12345678"). The CLI uses it to find what `pull` stored.
func LocalName(ref string) (string, error) {
	s, err := parseSource(ref, false)
	if err != nil {
		return "", err
	}
	return s.localName(), nil
}

func (s *source) localName() string {
	n := sanitize(path.Base(s.repo))
	switch {
	case s.tag != "" && s.tag != "latest":
		n += "-" + sanitize(s.tag)
	case s.tag == "" && s.digest != "":
		n += "-" + assets.Digest(s.digest).Short()
	}
	return n
}

// sanitize maps a string onto the characters store refs allow.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	out := string(b)
	if out == "" || !nameSegment.MatchString(out) {
		out = "x" + out
	}
	return out
}

// kernelHint: the seed names its kernel repositories "<distro>-kernel".
func (s *source) kernelHint() bool { return strings.Contains(path.Base(s.repo), "-kernel") }

// sourceField is what a pulled manifest's Source says: the ref and the registry digest it
// resolved to, so that a later pull can tell whether anything changed.
func (s *source) sourceField(topDigest string) string {
	src := s.display
	if s.dir == "" {
		src = "oci:" + src // layouts' display already reads "oci:/dir..."
	}
	if s.digest != "" {
		return src
	}
	return src + "@" + topDigest
}

// sourceDigest extracts the registry digest from a Source field written by sourceField.
func sourceDigest(src string) string {
	if !strings.HasPrefix(src, "oci:") {
		return ""
	}
	i := strings.LastIndex(src, "@")
	if i < 0 {
		return ""
	}
	return src[i+1:]
}

func (s *source) remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(hostPlatform()),
		remote.WithUserAgent("firegopher"),
	}
}

func hostPlatform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// resolve finds the image for the host's platform and the digest of what the ref names.
func (s *source) resolve(ctx context.Context) (v1.Image, string, error) {
	if s.dir != "" {
		return s.resolveLayout()
	}
	desc, err := remote.Get(s.ref, s.remoteOptions(ctx)...)
	if err != nil {
		return nil, "", fmt.Errorf("pull %s: %w", s.display, err)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, "", fmt.Errorf("pull %s: %s image: %w", s.display, platformString(hostPlatform()), err)
	}
	return img, desc.Digest.String(), nil
}

func (s *source) resolveLayout() (v1.Image, string, error) {
	idx, err := layout.ImageIndexFromPath(s.dir)
	if err != nil {
		return nil, "", fmt.Errorf("oci layout %s: %w", s.dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", fmt.Errorf("oci layout %s: %w", s.dir, err)
	}
	var cands []v1.Descriptor
	for _, d := range im.Manifests {
		switch {
		case s.digest != "" && d.Digest.String() != s.digest:
		case s.tag != "" && d.Annotations[refNameAnnotation] != s.tag:
		default:
			cands = append(cands, d)
		}
	}
	var top v1.Descriptor
	switch len(cands) {
	case 0:
		return nil, "", fmt.Errorf("oci layout %s: no image matches %s", s.dir, s.display)
	case 1:
		top = cands[0]
	default:
		if top, err = pickPlatform(cands); err != nil {
			return nil, "", fmt.Errorf("oci layout %s: %d images, none or several for %s: name one with :tag or @digest", s.dir, len(cands), platformString(hostPlatform()))
		}
	}
	if top.MediaType.IsIndex() {
		child, err := idx.ImageIndex(top.Digest)
		if err != nil {
			return nil, "", fmt.Errorf("oci layout %s: %w", s.dir, err)
		}
		cim, err := child.IndexManifest()
		if err != nil {
			return nil, "", fmt.Errorf("oci layout %s: %w", s.dir, err)
		}
		d, err := pickPlatform(cim.Manifests)
		if err != nil {
			return nil, "", fmt.Errorf("oci layout %s: %w", s.dir, err)
		}
		img, err := child.Image(d.Digest)
		return img, top.Digest.String(), err
	}
	img, err := idx.Image(top.Digest)
	if err != nil {
		return nil, "", fmt.Errorf("oci layout %s: %w", s.dir, err)
	}
	return img, top.Digest.String(), nil
}

// pickPlatform chooses the one image descriptor for the host's platform.
func pickPlatform(ds []v1.Descriptor) (v1.Descriptor, error) {
	want := hostPlatform()
	var found []v1.Descriptor
	for _, d := range ds {
		if d.Platform != nil && d.Platform.OS == want.OS && d.Platform.Architecture == want.Architecture && !d.MediaType.IsIndex() {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		return v1.Descriptor{}, fmt.Errorf("want one %s image, found %d", platformString(want), len(found))
	}
	return found[0], nil
}

func platformString(p v1.Platform) string { return p.OS + "/" + p.Architecture }

// Pull fetches ref for the host's platform and stores what it holds (see the package
// comment); concurrent pulls of one ref, in this process or others, download it once.
func Pull(ctx context.Context, store *assets.Store, ref string, opts Options) (Result, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch opts.Kind {
	case "", KindKernel, KindImage:
	default:
		return Result{}, fmt.Errorf("kind %q: want %q, %q or empty", opts.Kind, KindKernel, KindImage)
	}
	src, err := parseSource(ref, opts.Insecure)
	if err != nil {
		return Result{}, err
	}
	localName := opts.Name
	if localName == "" {
		localName = src.localName()
	}
	if !nameSegment.MatchString(localName) || len(localName) > 200 {
		return Result{}, fmt.Errorf("name %q: want letters, digits, '.', '_', '-' (at most 200)", localName)
	}

	unlock, err := store.Lock(ctx, lockName(src.display))
	if err != nil {
		return Result{}, err
	}
	defer unlock()

	// Whoever held the lock before us may have pulled this very digest: then we are done.
	// A digest ref can be checked without asking the registry.
	if src.digest != "" {
		if r, ok := cached(store, opts.Kind, localName, src.digest); ok {
			log.Debug("already pulled", "ref", src.display, "as", r.Kind+"/"+r.Name)
			return r, nil
		}
	}
	img, top, err := src.resolve(ctx)
	if err != nil {
		return Result{}, err
	}
	if r, ok := cached(store, opts.Kind, localName, top); ok {
		log.Debug("already up to date", "ref", src.display, "as", r.Kind+"/"+r.Name, "digest", top)
		return r, nil
	}

	p := &puller{store: store, src: src, opts: opts, log: log, name: localName, top: top}
	return p.run(ctx, img)
}

// cached finds a pulled asset named name whose Source records registry digest top.
func cached(store *assets.Store, kind, name, top string) (Result, bool) {
	kinds := []string{KindKernel, KindImage}
	if kind != "" {
		kinds = []string{kind}
	}
	for _, k := range kinds {
		d, err := store.Resolve(k + "/" + name)
		if err != nil {
			continue
		}
		var m manifest
		if err := store.GetJSON(d, &m); err != nil || sourceDigest(m.Source) != top {
			continue
		}
		// Only a complete asset counts; a missing part means pull again.
		if missing := m.missing(store); len(missing) > 0 {
			continue
		}
		return Result{Kind: k, Name: name, Digest: d, ManifestDigest: top, Cached: true}, true
	}
	return Result{}, false
}

// manifest is the union of assets.Kernel and assets.Image, for code that handles both.
type manifest struct {
	Source  string          `json:"source"`
	Version string          `json:"version,omitempty"`
	Vmlinux assets.Digest   `json:"vmlinux,omitempty"`
	Initrd  assets.Digest   `json:"initrd,omitempty"`
	Modules []assets.Module `json:"modules,omitempty"`
	Rootfs  assets.Digest   `json:"rootfs,omitempty"`
}

// parts lists the blobs the manifest references.
func (m *manifest) parts() []assets.Digest {
	var ds []assets.Digest
	for _, d := range []assets.Digest{m.Vmlinux, m.Initrd, m.Rootfs} {
		if d != "" {
			ds = append(ds, d)
		}
	}
	for _, mod := range m.Modules {
		ds = append(ds, mod.Digest)
	}
	return ds
}

func (m *manifest) missing(store *assets.Store) []assets.Digest {
	var out []assets.Digest
	if m.Vmlinux == "" && m.Rootfs == "" {
		return []assets.Digest{"(no vmlinux or rootfs)"}
	}
	for _, d := range m.parts() {
		if !store.Has(d) {
			out = append(out, d)
		}
	}
	return out
}

// lockName keeps lock file names short whatever the ref's length.
func lockName(display string) string {
	if len(display) <= 150 {
		return "pull/" + display
	}
	h := sha256.Sum256([]byte(display))
	return "pull/" + hex.EncodeToString(h[:16])
}

// checkPlatform rejects a single-platform image built for another machine; an index was
// already narrowed to the host's platform by the registry client.
func checkPlatform(cfg *v1.ConfigFile) error {
	want := hostPlatform()
	if cfg.OS != "" && cfg.OS != want.OS || cfg.Architecture != "" && cfg.Architecture != want.Architecture {
		return fmt.Errorf("image is for %s/%s, this host needs %s", cfg.OS, cfg.Architecture, platformString(want))
	}
	return nil
}
