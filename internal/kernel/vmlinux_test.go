package kernel

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

var fakeELF = append([]byte("\x7fELF"), bytes.Repeat([]byte("kernel text "), 5000)...)

// bzImage wraps payload in a minimal boot-protocol 2.15 image: a setup header, then the
// protected-mode part with a decompressor stub before the payload.
func bzImage(payload []byte) []byte {
	const setupSects = 3
	img := make([]byte, (setupSects+1)*512)
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	stub := make([]byte, 64)
	binary.LittleEndian.PutUint32(img[0x248:], uint32(len(stub)))
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	return append(append(img, stub...), payload...)
}

// withSize appends the uncompressed size, as the kernel's build does for every format but
// gzip (whose own trailer ends with it).
func withSize(compressed []byte, size int) []byte {
	return binary.LittleEndian.AppendUint32(bytes.Clone(compressed), uint32(size))
}

// payloads compresses data as the kernel's build would, in each supported format.
func payloads(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	var gz, zs bytes.Buffer
	gw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	gw.Write(data)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(data)
	zw.Close()
	// LZ4 legacy: the magic, then (size, block) pairs; two blocks here, so that the
	// decoder has to chain them.
	l4 := []byte{0x02, 0x21, 0x4c, 0x18}
	for _, part := range [][]byte{data[:len(data)/3], data[len(data)/3:]} {
		block := make([]byte, lz4.CompressBlockBound(len(part)))
		n, err := lz4.CompressBlock(part, block, nil)
		if err != nil || n == 0 {
			t.Fatalf("lz4: %d, %v", n, err)
		}
		l4 = append(binary.LittleEndian.AppendUint32(l4, uint32(n)), block[:n]...)
	}
	return map[string][]byte{
		"gzip": gz.Bytes(),
		"lz4":  withSize(l4, len(data)),
		"zstd": withSize(zs.Bytes(), len(data)),
		"xz":   withSize(xzOf(t, data, xz.WriterConfig{CheckSum: xz.CRC32}), len(data)),
	}
}

func TestVmlinuxDecompressesEveryPayloadFormat(t *testing.T) {
	for name, payload := range payloads(t, fakeELF) {
		got, err := Vmlinux(bzImage(payload))
		if err != nil || !bytes.Equal(got, fakeELF) {
			t.Errorf("%s: %d bytes, %v", name, len(got), err)
		}
	}
	// xz as the kernel really uses it, with the x86 BCJ filter.
	elf := bcjInput()
	got, err := Vmlinux(bzImage(withSize(readFixture(t, "x86-bcj.xz"), len(elf))))
	if err != nil || !bytes.Equal(got, elf) {
		t.Errorf("xz with the x86 filter: %d bytes, %v", len(got), err)
	}
}

func TestVmlinuxReturnsAnELFAsItIs(t *testing.T) {
	if got, err := Vmlinux(fakeELF); err != nil || &got[0] != &fakeELF[0] {
		t.Errorf("got %d bytes, %v", len(got), err)
	}
}

func TestVmlinuxRejectsWhatIsNotABzImage(t *testing.T) {
	old := bzImage(payloads(t, fakeELF)["gzip"])
	binary.LittleEndian.PutUint16(old[0x206:], 0x207)
	outside := bzImage(payloads(t, fakeELF)["gzip"])
	binary.LittleEndian.PutUint32(outside[0x24c:], 1<<30)
	for name, c := range map[string]struct {
		image []byte
		want  string
	}{
		"no header":      {bytes.Repeat([]byte("not a kernel "), 100), "neither an ELF vmlinux nor an x86 bzImage"},
		"too short":      {[]byte("MZ"), "neither an ELF vmlinux nor an x86 bzImage"},
		"old protocol":   {old, "predates"},
		"payload beyond": {outside, "does not fit the file"},
	} {
		if _, err := Vmlinux(c.image); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, c.want)
		}
	}
}

func TestVmlinuxNamesUnsupportedCompression(t *testing.T) {
	for payload, want := range map[string]string{
		"BZh91AY&SY bzip2 data":     "bzip2-compressed, which is not supported",
		"\x89LZO\x00\r\n\x1a\n lzo": "lzo-compressed, which is not supported",
		"\x5d\x00\x00\x80\x00 lzma": "lzma-compressed, which is not supported",
		"PK\x03\x04 something else": "unknown format (magic 50 4b 03 04 20 73)",
	} {
		if _, err := Vmlinux(bzImage(withSize([]byte(payload), 1000))); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error with %q", payload, err, want)
		}
	}
}

func TestVmlinuxCatchesDamagedPayloads(t *testing.T) {
	p := payloads(t, fakeELF)
	truncated := func(b []byte, n int) []byte { return withSize(b[:len(b)-4-n], len(fakeELF)) }
	notELF := []byte("MZ, not an ELF")
	for name, c := range map[string]struct {
		payload []byte
		want    string
	}{
		// A size that disagrees is what a trailer left inside the data would look like.
		"lz4 wrong size": {withSize(p["lz4"][:len(p["lz4"])-4], len(fakeELF)+1), "but the bzImage says"},
		"lz4 truncated":  {truncated(p["lz4"], 100), "lz4 payload"},
		"zstd truncated": {truncated(p["zstd"], 10), "zstd payload"},
		"xz truncated":   {truncated(p["xz"], 10), "xz payload"},
		"gzip truncated": {p["gzip"][:len(p["gzip"])-30], "gzip payload"},
		"not an ELF":     {payloads(t, notELF)["zstd"], "not an ELF kernel"},
	} {
		if _, err := Vmlinux(bzImage(c.payload)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, c.want)
		}
	}
}
