package oci

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/zstd"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/assets/oci/ocitest"
	"github.com/firegopher/firegopher/internal/image"
	"github.com/firegopher/firegopher/internal/kernel"
	"github.com/firegopher/firegopher/internal/kernel/kerneltest"
)

// TestMain doubles as the helper process of TestPullConcurrentProcesses.
func TestMain(m *testing.M) {
	if os.Getenv("OCI_TEST_HELPER") == "pull" {
		os.Exit(helperPull())
	}
	os.Exit(m.Run())
}

func helperPull() int {
	s, err := assets.Open(os.Getenv("OCI_TEST_STORE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r, err := Pull(context.Background(), s, os.Getenv("OCI_TEST_REF"), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

// fakeELF is a stand-in vmlinux: an ELF header and some bytes.
func fakeELF(tag string) []byte {
	b := make([]byte, 4096)
	copy(b, "\x7fELF\x02\x01\x01")
	copy(b[64:], tag)
	return b
}

func kernelLayer(t *testing.T, vmlinux, initrd []byte) v1.Layer {
	return layerOf(t, []tentry{
		dirE("boot", 0o755),
		fileE("boot/vmlinux", string(vmlinux), 0o644),
		fileE("boot/initrd", string(initrd), 0o644),
		fileE("boot/config", "CONFIG_VIRTIO=y\n", 0o644),
	})
}

func zstdBytes(t *testing.T, b []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// modulesLayer is a distribution's module tree: some modules compressed, a modules.builtin,
// and modules the guest does not need.
func modulesLayer(t *testing.T) v1.Layer {
	const base = "lib/modules/6.1.0-test-cloud-amd64/"
	return layerOf(t, []tentry{
		dirE("lib", 0o755),
		dirE("lib/modules", 0o755),
		fileE(base+"kernel/drivers/virtio/virtio_ring.ko", string(modRing), 0o644),
		fileE(base+"kernel/drivers/virtio/virtio.ko", string(modVirt), 0o644),
		fileE(base+"kernel/drivers/block/virtio_blk.ko.zst", string(zstdBytes(t, modBlk)), 0o644),
		fileE(base+"kernel/fs/unused.ko", string(kerneltest.Module("depends=")), 0o644),
		fileE(base+"modules.builtin", builtinList("virtio_blk"), 0o644),
	})
}

// A multi-platform kernel image: the host's platform is picked from the index.
func TestPullKernel(t *testing.T) {
	ctx := testCtx(t)
	reg := ocitest.New(t, nil)
	store := newStore(t)

	vmlinux, initrd := fakeELF("amd64"), []byte("initrd-bytes")
	host := imageOf(t, v1.Config{}, kernelLayer(t, vmlinux, initrd), modulesLayer(t))
	other := imageFor(t, "s390x", v1.Config{}, kernelLayer(t, fakeELF("other"), []byte("other initrd")))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}},
		mutate.IndexAddendum{Add: host, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	ref := reg.Host + "/falco/debian-kernel:6.1-x86_64"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()

	var prog bytes.Buffer
	res, err := Pull(ctx, store, ref, Options{Progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Kind: KindKernel, Name: "debian-kernel-6.1-x86_64", Digest: res.Digest, ManifestDigest: idxDigest.String()}
	if res != want {
		t.Errorf("result %+v, want %+v", res, want)
	}
	d, err := store.Resolve("kernel/debian-kernel-6.1-x86_64")
	if err != nil || d != res.Digest {
		t.Fatalf("ref: %v %v, want %s", d, err, res.Digest)
	}
	k, err := store.LoadKernel(d)
	if err != nil {
		t.Fatal(err)
	}
	elf, err := kernel.Vmlinux(vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	if k.Vmlinux != digestOf(elf) || k.Initrd != digestOf(initrd) {
		t.Errorf("kernel %+v: want vmlinux %s initrd %s", k, digestOf(elf), digestOf(initrd))
	}
	if k.Source != "oci:"+ref+"@"+idxDigest.String() {
		t.Errorf("source %q", k.Source)
	}
	wantMods := []assets.Module{
		{Path: "kernel/drivers/virtio/virtio_ring.ko", Digest: digestOf(modRing)},
		{Path: "kernel/drivers/virtio/virtio.ko", Digest: digestOf(modVirt)},
		{Path: "kernel/drivers/block/virtio_blk.ko", Digest: digestOf(modBlk)},
	}
	if !reflect.DeepEqual(k.Modules, wantMods) || k.Version != "6.1.0-test-cloud-amd64" {
		t.Errorf("modules %v version %q, want %v in load order", k.Modules, k.Version, wantMods)
	}
	if !regexp.MustCompile(`^(pulling layer sha256:[0-9a-f]{12}… [0-9.]+ (B|KiB)\n){2}$`).MatchString(prog.String()) {
		t.Errorf("progress output %q", prog.String())
	}
	assertTmpEmpty(t, store)

	// Again: the registry digest is unchanged, so nothing is downloaded.
	reg.ResetCounts()
	again, err := Pull(ctx, store, ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cached || again.Digest != res.Digest {
		t.Errorf("second pull %+v, want cached %s", again, res.Digest)
	}
	if n := len(reg.BlobGets()); n != 0 {
		t.Errorf("second pull downloaded %d blobs", n)
	}
}

func assertTmpEmpty(t *testing.T, s *assets.Store) {
	t.Helper()
	tmp, _ := os.ReadDir(filepath.Join(s.Root(), "tmp"))
	for _, e := range tmp {
		t.Errorf("left in tmp/: %s", e.Name())
	}
}

// makeExt4 builds a small real ext4 file holding one file.
func makeExt4(t *testing.T, content string) string {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "disk.ext4")
	if err := image.MakeExt4(context.Background(), src, out, 4<<20); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPullRootfsImage(t *testing.T) {
	ctx := testCtx(t)
	reg := ocitest.New(t, nil)
	store := newStore(t)
	disk := makeExt4(t, "hi")
	data, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	img := imageOf(t, v1.Config{Env: []string{"A=1"}}, layerOf(t, []tentry{dirE("images", 0o755), fileE("images/ubuntu.img", string(data), 0o644)}))
	ref := reg.Host + "/falco/ubuntu-image:22.04"
	pushImage(t, ref, img)

	res, err := Pull(ctx, store, ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindImage || res.Name != "ubuntu-image-22.04" {
		t.Errorf("result %+v", res)
	}
	im, err := store.LoadImage(res.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if im.Rootfs != digestOf(data) {
		t.Errorf("rootfs %s, want the shipped file %s", im.Rootfs, digestOf(data))
	}
	if im.Config == nil || !reflect.DeepEqual(im.Config.Env, []string{"A=1"}) {
		t.Errorf("config %+v", im.Config)
	}
	// Zeros became holes again.
	es, err := List(store)
	if err != nil || len(es) != 1 {
		t.Fatalf("list: %v %v", es, err)
	}
	if e := es[0]; e.Size != int64(len(data)) || e.DiskUsage >= e.Size || e.Problem != "" {
		t.Errorf("entry %+v: want size %d, stored sparse", e, len(data))
	}
	assertTmpEmpty(t, store)
}

// An ordinary container image: flattened, made into ext4, checked inside with debugfs.
func TestPullContainerImage(t *testing.T) {
	ctx := testCtx(t)
	reg := ocitest.New(t, nil)
	store := newStore(t)
	lower, upper := testLayers()
	cfg := v1.Config{Env: []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}, Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi"}, WorkingDir: "/data", User: "1000:1000"}
	ref := reg.Host + "/library/debian:bookworm"
	pushImage(t, ref, imageOf(t, cfg, layerOf(t, lower), layerOf(t, upper)))

	res, err := Pull(ctx, store, ref, Options{DiskSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindImage || res.Name != "debian-bookworm" {
		t.Errorf("result %+v", res)
	}
	im, err := store.LoadImage(res.Digest)
	if err != nil {
		t.Fatal(err)
	}
	want := &assets.ImageConfig{Env: cfg.Env, Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd, WorkingDir: cfg.WorkingDir, User: cfg.User}
	if !reflect.DeepEqual(im.Config, want) {
		t.Errorf("config %+v, want %+v", im.Config, want)
	}
	disk := store.Path(im.Rootfs)
	if fi, err := os.Stat(disk); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("rootfs: %v %v, want 64 MiB", fi, err)
	}

	stat := func(p string) string {
		out, errOut := debugfsOut(t, disk, "stat "+p)
		if strings.Contains(errOut, "not found") {
			return ""
		}
		return out
	}
	for p, wants := range map[string][]string{
		"/bin/su":                      {"Type: regular", "Mode:  04755"},
		"/bin/sgid":                    {"Mode:  02755", "Group:    42"},
		"/tmp":                         {"Type: directory", "Mode:  01777"},
		"/data/orig":                   {"User:  1000", "Group:  1000", "Links: 2"},
		"/data/sym":                    {"Type: symlink", `Fast link dest: "orig"`},
		"/dev/null2":                   {"Type: character special", "Device major/minor number: 01:03"},
		"/run/fifo":                    {"Type: FIFO"},
		"/" + longDir + "/" + longFile: {"Type: regular", "Size: 4"},
		"/replaced":                    {"Type: regular"},
	} {
		out := stat(p)
		for _, w := range wants {
			if !strings.Contains(regexp.MustCompile(`\s+`).ReplaceAllString(out, " "), regexp.MustCompile(`\s+`).ReplaceAllString(w, " ")) {
				t.Errorf("stat %s: no %q in:\n%s", p, w, out)
			}
		}
	}
	if ino := func(p string) string {
		return regexp.MustCompile(`Inode: (\d+)`).FindStringSubmatch(stat(p))[1]
	}; ino("/data/orig") != ino("/data/link") {
		t.Error("/data/link is not a hard link of /data/orig in the image")
	}
	if out := stat("/etc/deleteme"); out != "" {
		t.Errorf("/etc/deleteme survived its whiteout:\n%s", out)
	}
	if ls, _ := debugfsOut(t, disk, "ls /opq"); !strings.Contains(ls, "new") || strings.Contains(ls, "old") || strings.Contains(ls, "sub") {
		t.Errorf("opaque /opq lists %q, want only new", ls)
	}
	if out, _ := debugfsOut(t, disk, "cat /etc/passwd"); out != "root:x:0:0::/root:/bin/bash\n" {
		t.Errorf("/etc/passwd = %q", out)
	}
	if out, _ := debugfsOut(t, disk, "ea_get /xattr/file user.test"); !strings.Contains(out, "value") {
		t.Errorf("xattr user.test: %q", out)
	}
	assertTmpEmpty(t, store)
}

// blobPath finds the registry path of a layer blob in a recorded set of GETs.
func layerPath(t *testing.T, img v1.Image) string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ls[len(ls)-1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return "/blobs/" + d.String()
}

// randomLayer is a layer gzip cannot shrink, big enough to be caught mid-download.
func randomLayer(t *testing.T, size int) v1.Layer {
	b := make([]byte, size)
	rand.Read(b)
	return layerOf(t, []tentry{fileE("random", string(b), 0o644)})
}

func TestPullDigestMismatch(t *testing.T) {
	ctx := testCtx(t)
	var bad string
	reg := ocitest.New(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || bad == "" || !strings.HasSuffix(r.URL.Path, bad) {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			body[len(body)/2] ^= 0xff // same length, wrong bytes
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	})
	store := newStore(t)
	img := imageOf(t, v1.Config{}, randomLayer(t, 64<<10))
	ref := reg.Host + "/test/corrupt:1"
	pushImage(t, ref, img)
	bad = layerPath(t, img)

	_, err := Pull(ctx, store, ref, Options{})
	if err == nil || !strings.Contains(err.Error(), "do not match the layer's digest") {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
	assertNothingVisible(t, store)
}

func TestPullCancelled(t *testing.T) {
	var bad string
	started := make(chan struct{})
	reg := ocitest.New(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || bad == "" || !strings.HasSuffix(r.URL.Path, bad) {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.WriteHeader(http.StatusOK)
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			close(started)
			<-r.Context().Done() // stall mid-layer until the client gives up
		})
	})
	store := newStore(t)
	img := imageOf(t, v1.Config{}, layerOf(t, []tentry{fileE("a", "a", 0o644)}), randomLayer(t, 1<<20))
	ref := reg.Host + "/test/slow:1"
	pushImage(t, ref, img)
	bad = layerPath(t, img)

	ctx, cancel := context.WithCancel(testCtx(t))
	go func() {
		<-started
		cancel()
	}()
	_, err := Pull(ctx, store, ref, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	assertNothingVisible(t, store)
}

// pushKernelImage publishes a small kernel image and returns its ref.
func pushKernelImage(t *testing.T, reg *ocitest.Registry, repo string) string {
	img := imageOf(t, v1.Config{}, kernelLayer(t, fakeELF(repo), []byte("initrd of "+repo)), layerOf(t, []tentry{fileE("boot/extra", "x", 0o644)}))
	ref := reg.Host + "/" + repo + ":v1"
	pushImage(t, ref, img)
	reg.ResetCounts()
	return ref
}

func assertEachBlobOnce(t *testing.T, reg *ocitest.Registry) {
	t.Helper()
	gets := reg.BlobGets()
	// config + two layers
	if len(gets) != 3 {
		t.Errorf("blob GETs %v, want config and two layers", gets)
	}
	for p, n := range gets {
		if n != 1 {
			t.Errorf("%s downloaded %d times, want once", p, n)
		}
	}
}

func TestPullConcurrent(t *testing.T) {
	ctx := testCtx(t)
	reg := ocitest.New(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/blobs/") {
				time.Sleep(20 * time.Millisecond) // let the others pile up on the lock
			}
			h.ServeHTTP(w, r)
		})
	})
	store := newStore(t)
	ref := pushKernelImage(t, reg, "test/alpine-kernel")

	var wg sync.WaitGroup
	results := make([]Result, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = Pull(ctx, store, ref, Options{})
		}()
	}
	wg.Wait()
	fresh := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if r.Digest != results[0].Digest || r.Kind != KindKernel {
			t.Errorf("pull %d: %+v, want %+v", i, r, results[0])
		}
		if !r.Cached {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d pulls downloaded, want 1", fresh)
	}
	assertEachBlobOnce(t, reg)
}

// Separate processes share the store's lock just as goroutines do.
func TestPullConcurrentProcesses(t *testing.T) {
	reg := ocitest.New(t, nil)
	store := newStore(t)
	ref := pushKernelImage(t, reg, "test/fedora-kernel")

	const n = 4
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	for i := range cmds {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "OCI_TEST_HELPER=pull", "OCI_TEST_STORE="+store.Root(), "OCI_TEST_REF="+ref)
		outs[i] = &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = outs[i], outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
	}
	fresh := 0
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v: %s", i, err, outs[i])
		}
		var r Result
		if err := json.Unmarshal(outs[i].Bytes(), &r); err != nil {
			t.Fatalf("helper %d: %v: %s", i, err, outs[i])
		}
		if !r.Cached {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d processes downloaded, want 1", fresh)
	}
	assertEachBlobOnce(t, reg)
}

func TestDetectKind(t *testing.T) {
	mk := func(files ...string) string {
		dir := t.TempDir()
		for _, f := range files {
			p := filepath.Join(dir, f)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	for _, tc := range []struct {
		name  string
		files []string
		hint  bool
		want  string // "" = error
	}{
		{"kernel", []string{"boot/vmlinux", "boot/initrd", "lib/modules/6.1/kernel/x.ko"}, false, KindKernel},
		{"bzImage", []string{"boot/vmlinuz-6.1.0"}, false, KindKernel},
		{"distro with a kernel", []string{"boot/vmlinuz", "etc/passwd"}, false, KindImage},
		{"hinted kernel with extras", []string{"boot/vmlinuz", "usr/src/linux/Makefile"}, true, KindKernel},
		{"hinted but no kernel", []string{"etc/passwd"}, true, ""},
		{"container", []string{"etc/passwd", "bin/sh"}, false, KindImage},
		{"lib besides modules", []string{"boot/vmlinux", "lib/libc.so"}, false, KindImage},
	} {
		got, err := detectKind(mk(tc.files...), tc.hint)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s: %q, want an error", tc.name, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestLocalName(t *testing.T) {
	for ref, want := range map[string]string{
		"debian:bookworm": "debian-bookworm",
		"alpine":          "alpine",
		"ghcr.io/falcosecurity/kernel-testing/ubuntu-kernel:5.15-x86_64": "ubuntu-kernel-5.15-x86_64",
		"localhost:5000/a/b@sha256:" + strings.Repeat("ab", 32):          "b-abababababab",
		"oci:./layouts/my-kernel:v2":                                     "my-kernel-v2",
		"oci:/srv/oci/rootfs":                                            "rootfs",
	} {
		got, err := LocalName(ref)
		if err != nil || got != want {
			t.Errorf("LocalName(%q) = %q, %v; want %q", ref, got, err, want)
		}
	}
	for _, bad := range []string{"UPPER:case", "a b", ""} {
		if got, err := LocalName(bad); err == nil {
			t.Errorf("LocalName(%q) = %q, want an error", bad, got)
		}
	}
}

// A kernel whose module tree lacks guest modules still serves system VMs if it brings its
// own initrd; without one it is useless and the pull fails.
func TestPullKernelModulesMissing(t *testing.T) {
	ctx := testCtx(t)
	reg := ocitest.New(t, nil)
	store := newStore(t)
	mods := layerOf(t, []tentry{fileE("lib/modules/5.10.0/kernel/fs/unused.ko", string(kerneltest.Module("depends=")), 0o644)})

	withInitrd := reg.Host + "/test/old-kernel:1"
	pushImage(t, withInitrd, imageOf(t, v1.Config{}, kernelLayer(t, fakeELF("old"), []byte("initrd")), mods))
	res, err := Pull(ctx, store, withInitrd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := store.LoadKernel(res.Digest)
	if err != nil || len(k.Modules) != 0 || k.Initrd == "" || k.Version != "5.10.0" {
		t.Errorf("kernel %+v %v: want initrd, version 5.10.0, no modules", k, err)
	}

	bare := reg.Host + "/test/bare-kernel:1"
	pushImage(t, bare, imageOf(t, v1.Config{}, layerOf(t, []tentry{fileE("boot/vmlinux", string(fakeELF("bare")), 0o644)}), mods))
	if _, err := Pull(ctx, store, bare, Options{}); err == nil || !strings.Contains(err.Error(), "virtio") {
		t.Errorf("err = %v, want the missing guest modules named", err)
	}
	assertTmpEmpty(t, store)
}
