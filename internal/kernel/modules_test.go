package kernel

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/firegopher/firegopher/internal/kernel/kerneltest"
)

// A tree as a Debian package ships it, written from these files; the .xz, .zst and .gz
// ones are compressed on the way.
var fakeModules = map[string][]byte{
	"kernel/drivers/virtio/virtio_ring.ko":        kerneltest.Module("license=GPL", "depends="),
	"kernel/drivers/virtio/virtio.ko.gz":          kerneltest.Module("depends=virtio_ring"),
	"kernel/drivers/virtio/virtio_pci.ko.zst":     kerneltest.Module("depends=virtio,virtio_ring"),
	"kernel/drivers/char/hw_random/virtio-rng.ko": kerneltest.Module("depends=virtio,rng_core"),
	"kernel/drivers/block/virtio_blk.ko.xz":       kerneltest.Module("depends=virtio", "softdep=pre: crc absent_module post: late"),
	"kernel/net/core/a.ko":                        kerneltest.Module("depends=b"),
	"kernel/net/core/b.ko":                        kerneltest.Module("depends=a"), // a cycle must not hang
	"kernel/net/core/needs_ghost.ko":              kerneltest.Module("depends=virtio,ghost"),
	"kernel/fs/crc.ko":                            kerneltest.Module("depends="),
	"kernel/fs/late.ko":                           kerneltest.Module("depends="),
	"modules.builtin":                             []byte("kernel/drivers/char/hw_random/rng-core.ko\nkernel/fs/ext4/ext4.ko\n"),
	"modules.order":                               []byte("kernel/drivers/virtio/virtio_ring.ko\n"),
}

func compressed(t *testing.T, name string, data []byte) []byte {
	var b bytes.Buffer
	var w interface {
		Write([]byte) (int, error)
		Close() error
	}
	var err error
	switch filepath.Ext(name) {
	case ".xz":
		w, err = xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&b) // as kmod's install does
	case ".zst":
		w, err = zstd.NewWriter(&b)
	case ".gz":
		w = gzip.NewWriter(&b)
	default:
		return data
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func fakeTree(t *testing.T) *ModuleTree {
	dir := filepath.Join(t.TempDir(), "lib", "modules", "6.1.0-test")
	for rel, data := range fakeModules {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, compressed(t, rel, data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree, err := OpenModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func names(ms []Module) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestResolveOrdersDependenciesFirst(t *testing.T) {
	tree := fakeTree(t)
	if tree.Version() != "6.1.0-test" {
		t.Errorf("version %q", tree.Version())
	}
	got, err := tree.Resolve([]string{"virtio_blk", "virtio-rng", "virtio_pci", "virtio_blk"})
	if err != nil {
		t.Fatal(err)
	}
	// crc is a softdep "pre:" that exists; absent_module one that does not, late a "post:".
	want := []Module{
		{"virtio_ring", "kernel/drivers/virtio/virtio_ring.ko"},
		{"virtio", "kernel/drivers/virtio/virtio.ko.gz"},
		{"crc", "kernel/fs/crc.ko"},
		{"virtio_blk", "kernel/drivers/block/virtio_blk.ko.xz"},
		{"virtio_rng", "kernel/drivers/char/hw_random/virtio-rng.ko"},
		{"virtio_pci", "kernel/drivers/virtio/virtio_pci.ko.zst"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v,\nwant %v", got, want)
	}
}

func TestResolveOmitsBuiltins(t *testing.T) {
	// ext4 is wanted and built in; rng_core is a built-in dependency of virtio_rng.
	got, err := fakeTree(t).Resolve([]string{"ext4", "virtio_rng"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"virtio_ring", "virtio", "virtio_rng"}; !reflect.DeepEqual(names(got), want) {
		t.Fatalf("got %v, want %v", names(got), want)
	}
}

func TestResolveSurvivesCycles(t *testing.T) {
	got, err := fakeTree(t).Resolve([]string{"a"})
	if want := []string{"b", "a"}; err != nil || !reflect.DeepEqual(names(got), want) {
		t.Fatalf("got %v, %v; want %v", names(got), err, want)
	}
}

func TestResolveNamesUnknownModules(t *testing.T) {
	for _, c := range []struct {
		want []string
		msg  string
	}{
		{[]string{"virtio", "nosuch_b", "nosuch-a"}, "no module nosuch_a, nosuch_b "},
		{[]string{"needs_ghost"}, "no module ghost "}, // a dependency missing from the tree
	} {
		_, err := fakeTree(t).Resolve(c.want)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: got %v, want an error with %q", c.want, err, c.msg)
		}
	}
}

func TestOpenDecompressesModules(t *testing.T) {
	tree := fakeTree(t)
	for rel, want := range fakeModules {
		if !strings.HasPrefix(rel, "kernel/") {
			continue
		}
		got, err := tree.Open(Module{Name: Name(rel), Path: rel})
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, %v", rel, len(got), err)
		}
	}
}

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"virtio-rng":                        "virtio_rng",
		"kernel/drivers/char/virtio-rng.ko": "virtio_rng",
		"kernel/fs/ext4/ext4.ko.xz":         "ext4",
		"kernel/net/vmw_vsock/vsock.ko.zst": "vsock",
		"vmw_vsock_virtio_transport":        "vmw_vsock_virtio_transport",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOpenModuleTreeNeedsTheDirectory(t *testing.T) {
	if _, err := OpenModuleTree(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("no error for a missing tree")
	}
}
