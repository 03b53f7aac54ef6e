package oci

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/assets/oci/ocitest"
	"github.com/firegopher/firegopher/internal/kernel"
)

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// cachedKernel stores a kernel manifest as ImportKernelDeb would.
func cachedKernel(t *testing.T, s *assets.Store, ref string) *assets.Kernel {
	put := must[assets.Digest](t)
	k := &assets.Kernel{
		Source:  "test",
		Version: "6.1.0-test-amd64",
		Vmlinux: put(s.PutBytes(fakeELF("mine"))),
		Initrd:  put(s.PutBytes([]byte("my initrd"))),
		Modules: []assets.Module{
			{Path: "kernel/drivers/virtio/virtio_ring.ko", Digest: put(s.PutBytes(modRing))},
			{Path: "kernel/drivers/virtio/virtio.ko", Digest: put(s.PutBytes(modVirt))},
			{Path: "kernel/drivers/block/virtio_blk.ko", Digest: put(s.PutBytes(modBlk))},
		},
	}
	if err := s.Tag(ref, put(s.PutJSON(k))); err != nil {
		t.Fatal(err)
	}
	return k
}

func cachedImage(t *testing.T, s *assets.Store, ref string) *assets.Image {
	disk := filepath.Join(must[string](t)(s.TempDir("test-*")), "rootfs.ext4")
	data := must[[]byte](t)(os.ReadFile(makeExt4(t, "round trip")))
	if err := os.WriteFile(disk, data, 0o644); err != nil {
		t.Fatal(err)
	}
	im := &assets.Image{
		Source: "test",
		Rootfs: must[assets.Digest](t)(s.Adopt(disk)),
		Config: &assets.ImageConfig{Env: []string{"A=1"}, Cmd: []string{"/sbin/init"}, User: "root"},
	}
	os.RemoveAll(filepath.Dir(disk))
	if err := s.Tag(ref, must[assets.Digest](t)(s.PutJSON(im))); err != nil {
		t.Fatal(err)
	}
	return im
}

// layerFiles lists the single layer of a pushed image: name → content digest ("" for dirs).
func layerFiles(t *testing.T, ref string) map[string]assets.Digest {
	r := must[name.Reference](t)(name.ParseReference(ref))
	img := must[v1.Image](t)(remote.Image(r))
	ls := must[[]v1.Layer](t)(img.Layers())
	if len(ls) != 1 {
		t.Fatalf("%d layers, want 1", len(ls))
	}
	rc := must[io.ReadCloser](t)(ls[0].Uncompressed())
	defer rc.Close()
	out := map[string]assets.Digest{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeDir {
			out[hdr.Name] = ""
			continue
		}
		out[hdr.Name] = digestOf(must[[]byte](t)(io.ReadAll(tr)))
	}
}

func TestPushPullKernel(t *testing.T) {
	ctx := testCtx(t)
	reg := ocitest.New(t, nil)
	a, b := newStore(t), newStore(t)
	k := cachedKernel(t, a, "kernel/mine")
	ref := reg.Host + "/me/mine-kernel:6.1"
	if err := Push(ctx, a, "kernel/mine", ref, false); err != nil {
		t.Fatal(err)
	}

	// The seed's FROM-scratch layout.
	want := map[string]assets.Digest{
		"boot/": "", "boot/vmlinux": k.Vmlinux, "boot/initrd": k.Initrd,
		"lib/": "", "lib/modules/": "", "lib/modules/6.1.0-test-amd64/": "",
		"lib/modules/6.1.0-test-amd64/kernel/":                              "",
		"lib/modules/6.1.0-test-amd64/kernel/drivers/":                      "",
		"lib/modules/6.1.0-test-amd64/kernel/drivers/block/":                "",
		"lib/modules/6.1.0-test-amd64/kernel/drivers/virtio/":               "",
		"lib/modules/6.1.0-test-amd64/kernel/drivers/virtio/virtio_ring.ko": k.Modules[0].Digest,
		"lib/modules/6.1.0-test-amd64/kernel/drivers/virtio/virtio.ko":      k.Modules[1].Digest,
		"lib/modules/6.1.0-test-amd64/kernel/drivers/block/virtio_blk.ko":   k.Modules[2].Digest,
		"lib/modules/6.1.0-test-amd64/modules.builtin":                      digestOf([]byte(pushedBuiltin("virtio_blk"))),
	}
	if got := layerFiles(t, ref); !reflect.DeepEqual(got, want) {
		t.Errorf("pushed layer:\n got  %v\n want %v", got, want)
	}

	res, err := Pull(ctx, b, ref, Options{Name: "back"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindKernel || res.Name != "back" {
		t.Errorf("result %+v", res)
	}
	got := must[*assets.Kernel](t)(b.LoadKernel(res.Digest))
	if got.Vmlinux != k.Vmlinux || got.Initrd != k.Initrd || got.Version != k.Version {
		t.Errorf("pulled back %+v, want %+v", got, k)
	}
	checkRoundTripModules(t, got.Modules, k.Modules)

	// Pushing the same kernel again gives the same image.
	d1 := must[*remote.Descriptor](t)(remote.Get(must[name.Reference](t)(name.ParseReference(ref)))).Digest
	if err := Push(ctx, a, "kernel/mine", ref, false); err != nil {
		t.Fatal(err)
	}
	d2 := must[*remote.Descriptor](t)(remote.Get(must[name.Reference](t)(name.ParseReference(ref)))).Digest
	if d1 != d2 {
		t.Errorf("second push of the same kernel: digest %s, then %s", d1, d2)
	}
	assertTmpEmpty(t, a)
}

func TestPushPullImage(t *testing.T) {
	ctx := testCtx(t)
	reg := ocitest.New(t, nil)
	a := newStore(t)
	im := cachedImage(t, a, "image/mine")

	for _, dst := range []string{reg.Host + "/me/mine-image:1", "oci:" + filepath.Join(t.TempDir(), "layout") + ":v1"} {
		t.Run(dst[:3], func(t *testing.T) {
			if err := Push(ctx, a, "image/mine", dst, false); err != nil {
				t.Fatal(err)
			}
			b := newStore(t)
			res, err := Pull(ctx, b, dst, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Kind != KindImage {
				t.Errorf("result %+v", res)
			}
			got := must[*assets.Image](t)(b.LoadImage(res.Digest))
			if got.Rootfs != im.Rootfs || !reflect.DeepEqual(got.Config, im.Config) {
				t.Errorf("pulled back %+v %+v, want %+v %+v", got, got.Config, im, im.Config)
			}
		})
	}
}

func TestListRemoveGC(t *testing.T) {
	s := newStore(t)
	k := cachedKernel(t, s, "kernel/k1")
	im := cachedImage(t, s, "image/i1")
	stray := must[assets.Digest](t)(s.PutBytes([]byte("nobody points at me")))
	young := must[assets.Digest](t)(s.PutBytes([]byte("a pull in flight wrote me")))

	es := must[[]Entry](t)(List(s))
	if len(es) != 2 || es[0].Kind+"/"+es[0].Name != "image/i1" || es[1].Kind+"/"+es[1].Name != "kernel/k1" {
		t.Fatalf("list %+v", es)
	}
	if e := es[1]; e.Source != "test" || e.Version != k.Version || e.Size != int64(4096+len("my initrd")+len(modRing)+len(modVirt)+len(modBlk)) || e.Problem != "" {
		t.Errorf("kernel entry %+v", e)
	}

	// Everything but young is old enough to collect.
	old := time.Now().Add(-time.Hour)
	blobs := must[[]os.DirEntry](t)(os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256")))
	for _, e := range blobs {
		if "sha256:"+e.Name() != string(young) {
			if err := os.Chtimes(filepath.Join(s.Root(), "blobs", "sha256", e.Name()), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	removed := must[[]assets.Digest](t)(GC(s))
	if !reflect.DeepEqual(removed, []assets.Digest{stray}) {
		t.Errorf("gc removed %v, want only %s", removed, stray)
	}
	for _, d := range []assets.Digest{k.Vmlinux, k.Initrd, k.Modules[0].Digest, im.Rootfs, young} {
		if !s.Has(d) {
			t.Errorf("gc removed %s", d)
		}
	}

	if err := Remove(s, "kernel/k1"); err != nil {
		t.Fatal(err)
	}
	if err := Remove(s, "kernel/k1"); err == nil {
		t.Error("second remove: no error")
	}
	removed = must[[]assets.Digest](t)(GC(s))
	if len(removed) != 6 || !slices.Contains(removed, k.Vmlinux) || slices.Contains(removed, im.Rootfs) {
		t.Errorf("gc after rmi removed %v, want the kernel's manifest, vmlinux, initrd and 3 modules", removed)
	}
	if es := must[[]Entry](t)(List(s)); len(es) != 1 || es[0].Name != "i1" {
		t.Errorf("list after rmi: %+v", es)
	}
}

// checkRoundTripModules compares modules as path → digest: the pulled kernel lists them in
// load order, which need not be the order they were cached in.
func checkRoundTripModules(t *testing.T, got, want []assets.Module) {
	t.Helper()
	m := func(ms []assets.Module) map[string]assets.Digest {
		out := map[string]assets.Digest{}
		for _, x := range ms {
			out[x.Path] = x.Digest
		}
		return out
	}
	if !reflect.DeepEqual(m(got), m(want)) {
		t.Errorf("modules after the round trip %v, want %v", got, want)
	}
}

// pushedBuiltin is the modules.builtin Push writes: the guest modules the kernel lacks.
func pushedBuiltin(except ...string) string {
	var b strings.Builder
	for _, g := range kernel.GuestModules {
		if !slices.Contains(except, g) {
			b.WriteString("kernel/" + kernel.Name(g) + ".ko\n")
		}
	}
	return b.String()
}
