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

// module builds a minimal ELF64 relocatable object with a .modinfo section.
func module(modinfo ...string) []byte {
	info := []byte(strings.Join(modinfo, "\x00") + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	infoOff := ehsize
	strOff := infoOff + len(info)
	shOff := (strOff + len(shstr) + 7) &^ 7
	out := make([]byte, shOff+3*shentsize)
	copy(out, "\x7fELF")
	out[4], out[5], out[6] = 2, 1, 1 // 64-bit, little endian, version 1
	le := binary.LittleEndian
	le.PutUint16(out[16:], 1)  // ET_REL
	le.PutUint16(out[18:], 62) // x86-64
	le.PutUint32(out[20:], 1)
	le.PutUint64(out[40:], uint64(shOff))
	le.PutUint16(out[52:], ehsize)
	le.PutUint16(out[58:], shentsize)
	le.PutUint16(out[60:], 3) // sections
	le.PutUint16(out[62:], 2) // .shstrtab index
	copy(out[infoOff:], info)
	copy(out[strOff:], shstr)
	sh := func(i int, name, typ uint32, off, size int) {
		b := out[shOff+i*shentsize:]
		le.PutUint32(b[0:], name)
		le.PutUint32(b[4:], typ)
		le.PutUint64(b[24:], uint64(off))
		le.PutUint64(b[32:], uint64(size))
		le.PutUint64(b[48:], 1)
	}
	sh(1, 1, 1, infoOff, len(info))  // .modinfo, PROGBITS
	sh(2, 10, 3, strOff, len(shstr)) // .shstrtab, STRTAB
	return out
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
	write("kernel/drivers/virtio/virtio_ring.ko", module("license=GPL", "depends="))
	write("kernel/drivers/virtio/virtio.ko", module("depends=virtio_ring"))
	write("kernel/drivers/virtio/virtio_pci.ko", module("depends=virtio,virtio_ring"))
	write("kernel/drivers/char/hw_random/virtio-rng.ko", module("depends=virtio,rng_core"))
	write("kernel/net/core/a.ko", module("depends=b"))
	write("kernel/net/core/b.ko", module("depends=a")) // a cycle must not hang
	write("kernel/fs/crc.ko", module("depends="))
	var xzb bytes.Buffer
	xw, _ := xz.NewWriter(&xzb)
	xw.Write(module("depends=virtio", "softdep=pre: crc absent_module"))
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
