package kernel

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"

	"github.com/firegopher/firegopher/internal/kernel/kerneltest"
)

var fakeELF = append([]byte("\x7fELF"), bytes.Repeat([]byte("kernel text "), 5000)...)

// bzImage wraps payload in a minimal boot-protocol 2.15 image, with the 4-byte size the
// kernel's build appends after the compressed data.
func bzImage(payload []byte) []byte {
	const setupSects = 3
	img := make([]byte, (setupSects+1)*512)
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	pm := make([]byte, 64) // decompressor stub before the payload
	payload = binary.LittleEndian.AppendUint32(append([]byte(nil), payload...), uint32(len(fakeELF)))
	binary.LittleEndian.PutUint32(img[0x248:], uint32(len(pm)))
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	return append(append(img, pm...), payload...)
}

func TestVmlinuxFromEveryPayloadFormat(t *testing.T) {
	var gz, zs, xzb bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(fakeELF)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(fakeELF)
	zw.Close()
	xw, _ := xz.NewWriter(&xzb)
	xw.Write(fakeELF)
	xw.Close()
	// LZ4 legacy: magic, then (size, block) pairs.
	block := make([]byte, lz4.CompressBlockBound(len(fakeELF)))
	n, err := lz4.CompressBlock(fakeELF, block, nil)
	if err != nil || n == 0 {
		t.Fatal(err)
	}
	l4 := binary.LittleEndian.AppendUint32([]byte{0x02, 0x21, 0x4c, 0x18}, uint32(n))
	l4 = append(l4, block[:n]...)

	for name, payload := range map[string][]byte{"gzip": gz.Bytes(), "zstd": zs.Bytes(), "xz": xzb.Bytes(), "lz4": l4} {
		got, err := Vmlinux(bzImage(payload))
		if err != nil || !bytes.Equal(got, fakeELF) {
			t.Errorf("%s: %d bytes, %v", name, len(got), err)
		}
	}
	if got, err := Vmlinux(fakeELF); err != nil || !bytes.Equal(got, fakeELF) {
		t.Errorf("an ELF is returned as it is: %v", err)
	}
}

func TestVmlinuxErrorsSayWhatIsWrong(t *testing.T) {
	if _, err := Vmlinux([]byte("not a kernel at all, but long enough to have a header........")); err == nil || !strings.Contains(err.Error(), "bzImage") {
		t.Errorf("got %v", err)
	}
	if _, err := Vmlinux(bzImage([]byte("BZh91AY&SY bzip2 is not supported"))); err == nil || !strings.Contains(err.Error(), "unsupported format") {
		t.Errorf("got %v", err)
	}
}

func fakeTree(t *testing.T) *ModuleTree {
	dir := filepath.Join(t.TempDir(), "6.1.0-test")
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kernel/drivers/virtio/virtio_ring.ko", kerneltest.Module("license=GPL", "depends="))
	write("kernel/drivers/virtio/virtio.ko", kerneltest.Module("depends=virtio_ring"))
	write("kernel/drivers/virtio/virtio_pci.ko", kerneltest.Module("depends=virtio,virtio_ring"))
	write("kernel/drivers/char/hw_random/virtio-rng.ko", kerneltest.Module("depends=virtio,rng_core"))
	write("kernel/net/core/a.ko", kerneltest.Module("depends=b"))
	write("kernel/net/core/b.ko", kerneltest.Module("depends=a")) // a cycle must not hang
	write("kernel/fs/crc.ko", kerneltest.Module("depends="))
	var xzb bytes.Buffer
	xw, _ := xz.NewWriter(&xzb)
	xw.Write(kerneltest.Module("depends=virtio", "softdep=pre: crc absent_module"))
	xw.Close()
	write("kernel/drivers/block/virtio_blk.ko.xz", xzb.Bytes())
	write("modules.builtin", []byte("kernel/drivers/char/hw_random/rng-core.ko\nkernel/fs/ext4/ext4.ko\n"))
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
	got, err := tree.Resolve([]string{"virtio_blk", "virtio-rng", "virtio_pci", "ext4"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"virtio_ring", "virtio", "crc", "virtio_blk", "virtio_rng", "virtio_pci"}
	if !reflect.DeepEqual(names(got), want) {
		t.Fatalf("got %v, want %v", names(got), want)
	}
	if tree.Version() != "6.1.0-test" {
		t.Fatal(tree.Version())
	}
}

func TestResolveSurvivesCycles(t *testing.T) {
	got, err := fakeTree(t).Resolve([]string{"a"})
	if err != nil || len(got) != 2 {
		t.Fatalf("%v %v", names(got), err)
	}
}

func TestResolveNamesUnknownModules(t *testing.T) {
	_, err := fakeTree(t).Resolve([]string{"virtio", "nosuch_a", "nosuch_b"})
	if err == nil || !strings.Contains(err.Error(), "nosuch_a, nosuch_b") {
		t.Fatalf("got %v", err)
	}
}

func TestOpenDecompressesModules(t *testing.T) {
	tree := fakeTree(t)
	ms, _ := tree.Resolve([]string{"virtio_blk"})
	data, err := tree.Open(ms[len(ms)-1])
	if err != nil || !bytes.HasPrefix(data, []byte("\x7fELF")) {
		t.Fatalf("%v", err)
	}
}
