package resolve

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/assets/oci/ocitest"
	"github.com/firegopher/firegopher/internal/spec"
)

func TestApplyImageDefaults(t *testing.T) {
	img := &assets.ImageConfig{
		Env: []string{"PATH=/bin", "A=image"}, Entrypoint: []string{"/entry", "-x"}, Cmd: []string{"default", "args"},
		WorkingDir: "/srv", User: "app",
	}
	for _, c := range []struct {
		name string
		in   spec.Process
		cfg  *assets.ImageConfig
		want spec.Process
	}{
		{"image defaults fill an empty process", spec.Process{}, img,
			spec.Process{Cmd: []string{"/entry", "-x", "default", "args"}, Env: []string{"PATH=/bin", "A=image"}, WorkDir: "/srv", User: "app"}},
		{"user command replaces Cmd, Entrypoint stays, user env last", spec.Process{Cmd: []string{"mine"}, Env: []string{"A=user"}, WorkDir: "/w", User: "0"}, img,
			spec.Process{Cmd: []string{"/entry", "-x", "mine"}, Env: []string{"PATH=/bin", "A=image", "A=user"}, WorkDir: "/w", User: "0"}},
		{"no image config", spec.Process{Cmd: []string{"ls"}, Env: []string{"B=1"}}, nil,
			spec.Process{Cmd: []string{"ls"}, Env: []string{"B=1"}}},
		{"entrypoint only", spec.Process{}, &assets.ImageConfig{Entrypoint: []string{"/e"}},
			spec.Process{Cmd: []string{"/e"}}},
	} {
		p := c.in
		if err := ApplyImageDefaults(&p, c.cfg); err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(p, c.want) {
			t.Errorf("%s:\n got  %+v\n want %+v", c.name, p, c.want)
		}
	}
	// The image's config is not aliased: changing the process leaves it alone.
	var p spec.Process
	if err := ApplyImageDefaults(&p, img); err != nil {
		t.Fatal(err)
	}
	p.Cmd[0], p.Env[0] = "changed", "changed"
	if img.Entrypoint[0] != "/entry" || img.Env[0] != "PATH=/bin" {
		t.Errorf("image config changed through the process: %+v", img)
	}

	for _, cfg := range []*assets.ImageConfig{nil, {Env: []string{"A=1"}, WorkingDir: "/w"}} {
		if err := ApplyImageDefaults(&spec.Process{}, cfg); !errors.Is(err, ErrNoCommand) {
			t.Errorf("no command, config %+v: %v, want ErrNoCommand", cfg, err)
		}
	}
}

func newResolver(t *testing.T) *Resolver {
	t.Helper()
	s, err := assets.Open(filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	return &Resolver{Store: s}
}

// fakeELF stands in for a vmlinux: an ELF header and some bytes.
func fakeELF(tag string) []byte {
	b := make([]byte, 4096)
	copy(b, "\x7fELF\x02\x01\x01")
	copy(b[64:], tag)
	return b
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantErr(t *testing.T, what string, err error, is error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one naming %q", what, parts)
		return
	}
	if is != nil && !errors.Is(err, is) {
		t.Errorf("%s: %v, want %v", what, err, is)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want it to name %q", what, err, p)
		}
	}
}

func TestKernelFileAndName(t *testing.T) {
	ctx := context.Background()
	r := newResolver(t)
	path := writeFile(t, "vmlinux", fakeELF("k1"))
	d, k, err := r.Kernel(ctx, spec.AssetRef{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if k.Source != "file:"+path || !r.Store.Has(k.Vmlinux) {
		t.Errorf("kernel %+v from %s", k, path)
	}

	_, _, err = r.Kernel(ctx, spec.AssetRef{Name: "mine"})
	wantErr(t, "missing name", err, assets.ErrNotFound, "--kernel", "mine", "firegopher pull")

	if err := r.Store.Tag("kernel/mine", d); err != nil {
		t.Fatal(err)
	}
	d2, k2, err := r.Kernel(ctx, spec.AssetRef{Name: "mine"})
	if err != nil || d2 != d || !reflect.DeepEqual(k2, k) {
		t.Errorf("kernel/mine = %s %+v %v, want %s %+v", d2, k2, err, d, k)
	}

	_, _, err = r.Kernel(ctx, spec.AssetRef{Path: writeFile(t, "junk", []byte("not a kernel"))})
	wantErr(t, "junk file", err, nil, "--kernel")
	_, _, err = r.Kernel(ctx, spec.AssetRef{})
	wantErr(t, "empty ref", err, nil, "--kernel", "empty")
}

func TestImageFileAndName(t *testing.T) {
	ctx := context.Background()
	r := newResolver(t)
	path := writeFile(t, "disk.ext4", []byte("a disk"))
	rootfs, cfg, err := r.Image(ctx, spec.AssetRef{Path: path})
	if rootfs != path || cfg != nil || err != nil {
		t.Errorf("image file = %q %+v %v, want %q as it is", rootfs, cfg, err, path)
	}

	_, _, err = r.Image(ctx, spec.AssetRef{Name: "web"})
	wantErr(t, "missing name", err, assets.ErrNotFound, "--image", "web", "firegopher prepare --name")
	_, _, err = r.Image(ctx, spec.AssetRef{Deb: "linux-image-amd64"})
	wantErr(t, "deb image", err, nil, "--image", "deb:linux-image-amd64", "only be a kernel")

	blob, err := r.Store.PutBytes([]byte("an ext4"))
	if err != nil {
		t.Fatal(err)
	}
	want := &assets.ImageConfig{Cmd: []string{"serve"}}
	d, err := r.Store.PutJSON(&assets.Image{Source: "test", Rootfs: blob, Config: want})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store.Tag("image/web", d); err != nil {
		t.Fatal(err)
	}
	rootfs, cfg, err = r.Image(ctx, spec.AssetRef{Name: "web"})
	if err != nil || rootfs != r.Store.Path(blob) || !reflect.DeepEqual(cfg, want) {
		t.Errorf("image/web = %q %+v %v, want %q %+v", rootfs, cfg, err, r.Store.Path(blob), want)
	}

	// A manifest whose root filesystem is gone is an error, not a path to nothing.
	if err := os.Remove(r.Store.Path(blob)); err != nil {
		t.Fatal(err)
	}
	_, _, err = r.Image(ctx, spec.AssetRef{Name: "web"})
	wantErr(t, "rootfs gone", err, assets.ErrNotFound, "--image", "web")
}

// push stores a one-layer image of files (with their parent directories) and config cfg
// for the host's platform in reg as repoTag, and returns its reference.
func push(t *testing.T, reg *ocitest.Registry, repoTag string, cfg v1.Config, files map[string][]byte) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		for d := filepath.Dir(p); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}))
	}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: 0o644, Size: int64(len(files[p])), ModTime: time.Unix(0, 0)}))
		_, err := tw.Write(files[p])
		must(t, err)
	}
	must(t, tw.Close())
	b := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	must(t, err)
	img, err := mutate.AppendLayers(empty.Image, layer)
	must(t, err)
	cf, err := img.ConfigFile()
	must(t, err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", runtime.GOARCH, cfg
	img, err = mutate.ConfigFile(img, cf)
	must(t, err)
	ref := reg.Host + "/" + repoTag
	r, err := name.ParseReference(ref, name.Insecure)
	must(t, err)
	must(t, remote.Write(r, img))
	return ref
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A registry reference is pulled on first use, under its local name, and found in the
// cache without asking the registry afterwards.
func TestKernelPulledOnce(t *testing.T) {
	ctx := testCtx(t)
	reg := ocitest.New(t, nil)
	ref := push(t, reg, "firegopher/test-kernel:6.1", v1.Config{}, map[string][]byte{"boot/vmlinux": fakeELF("pulled")})
	r := newResolver(t)
	var progress bytes.Buffer
	r.Progress = &progress

	d, k, err := r.Kernel(ctx, spec.AssetRef{OCI: ref})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.Source, "oci:"+ref) || !r.Store.Has(k.Vmlinux) {
		t.Errorf("kernel %+v", k)
	}
	if !strings.Contains(progress.String(), "pulling layer") {
		t.Errorf("progress %q, want the layer's", progress.String())
	}
	// Stored under the reference's local name, as `firegopher pull` would.
	if got, err := r.Store.Resolve("kernel/test-kernel-6.1"); err != nil || got != d {
		t.Errorf("kernel/test-kernel-6.1 = %s %v, want %s", got, err, d)
	}

	reg.ResetCounts()
	d2, _, err := r.Kernel(ctx, spec.AssetRef{OCI: ref})
	if err != nil || d2 != d {
		t.Fatalf("second resolve = %s %v, want %s", d2, err, d)
	}
	if n := reg.Requests(); n != 0 {
		t.Errorf("second resolve sent %d requests to the registry", n)
	}

	_, _, err = r.Kernel(ctx, spec.AssetRef{OCI: reg.Host + "/firegopher/absent-kernel:1"})
	wantErr(t, "absent repository", err, nil, "--kernel", "absent-kernel")
}

// A container image is pulled, flattened into ext4, and comes with its run defaults.
func TestImagePulled(t *testing.T) {
	ctx := testCtx(t)
	reg := ocitest.New(t, nil)
	cfg := v1.Config{Env: []string{"PATH=/bin"}, Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"}, WorkingDir: "/srv", User: "1000"}
	ref := push(t, reg, "library/app:2", cfg, map[string][]byte{"bin/app": []byte("#!/bin/sh\n"), "srv/index.html": []byte("hi\n")})
	r := newResolver(t)

	rootfs, got, err := r.Image(ctx, spec.AssetRef{OCI: ref})
	if err != nil {
		t.Fatal(err)
	}
	want := &assets.ImageConfig{Env: cfg.Env, Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd, WorkingDir: cfg.WorkingDir, User: cfg.User}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config %+v, want %+v", got, want)
	}
	d, err := r.Store.Resolve("image/app-2")
	if err != nil {
		t.Fatal(err)
	}
	im, err := r.Store.LoadImage(d)
	if err != nil || rootfs != r.Store.Path(im.Rootfs) {
		t.Errorf("rootfs %q, want image/app-2's %+v (%v)", rootfs, im, err)
	}
	if fi, err := os.Stat(rootfs); err != nil || fi.Size() == 0 {
		t.Errorf("rootfs %s: %v %v", rootfs, fi, err)
	}
}
