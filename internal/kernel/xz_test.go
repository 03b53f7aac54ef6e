package kernel

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/ulikunitz/xz"
)

// codeLike returns n deterministic bytes that give the x86 BCJ filter work: call and jmp
// opcodes (E8, E9) with near displacements, which it converts, among noise holding more
// E8/E9 bytes, some adjacent, which it must leave alone.
func codeLike(n int) []byte {
	out := make([]byte, 0, n+5)
	x := uint32(2463534242)
	next := func() uint32 { x ^= x << 13; x ^= x >> 17; x ^= x << 5; return x }
	for len(out) < n {
		switch r := next(); r % 8 {
		case 0, 1:
			out = append(out, 0xe8|byte(r>>8)&1)
			out = binary.LittleEndian.AppendUint32(out, uint32(int32(next()%(1<<20))-1<<19))
		case 2:
			out = append(out, byte(next()))
		default:
			out = append(out, byte(next()%8))
		}
	}
	return out[:n]
}

// bcjInput is what testdata/x86-bcj.xz holds. That file comes from xz itself, compressing
// as the kernel's scripts/xz_wrap.sh does for x86:
//
//	xz --check=crc32 --x86 --lzma2=preset=6,dict=1MiB
//
// so the test holds our BCJ decoder against the reference encoder, not against itself.
func bcjInput() []byte { return append([]byte("\x7fELF"), codeLike(8<<10)...) }

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnxzUndoesTheX86Filter(t *testing.T) {
	want := bcjInput()
	got, err := unxz(readFixture(t, "x86-bcj.xz"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("decoded %d bytes, not the %d that were compressed", len(got), len(want))
	}
	// The input must exercise the filter, or the test above proves nothing about it.
	filtered := bytes.Clone(want)
	unBCJx86(filtered, 0)
	if bytes.Equal(filtered, want) {
		t.Fatal("the filter leaves the test input unchanged")
	}
}

// xzOf compresses data with github.com/ulikunitz/xz, which writes no BCJ filter but lets
// the check type and block size vary.
func xzOf(t *testing.T, data []byte, cfg xz.WriterConfig) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := cfg.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestUnxzChecksBlocksAndStreams(t *testing.T) {
	data := bytes.Repeat([]byte("a module's text, again and again. "), 3000)
	for name, cfg := range map[string]xz.WriterConfig{
		"crc32":  {CheckSum: xz.CRC32},
		"crc64":  {CheckSum: xz.CRC64},
		"sha256": {CheckSum: xz.SHA256},
		"none":   {NoCheckSum: true},
		"blocks": {CheckSum: xz.CRC32, BlockSize: 10000},
	} {
		got, err := unxz(xzOf(t, data, cfg), nil)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes, %v", name, len(got), err)
		}
	}
	// Concatenated streams, with stream padding between and after them, are one file.
	two := append(xzOf(t, data[:1000], xz.WriterConfig{}), 0, 0, 0, 0)
	two = append(append(two, xzOf(t, data[1000:], xz.WriterConfig{})...), 0, 0, 0, 0)
	if got, err := unxz(two, nil); err != nil || !bytes.Equal(got, data) {
		t.Errorf("two streams: %d bytes, %v", len(got), err)
	}
}

func TestUnxzRejectsDamage(t *testing.T) {
	good := readFixture(t, "x86-bcj.xz")
	damaged := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"truncated":     good[:len(good)-20],
		"flipped byte":  damaged(func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }),
		"odd padding":   append(bytes.Clone(good), 0, 0),
		"trailing junk": append(bytes.Clone(good), 1, 2, 3, 4),
		"not xz at all": []byte("definitely not xz"),
		// The CRC32 ends where the 12-byte index and the 12-byte footer start.
		"flipped in check": damaged(func(b []byte) []byte { b[len(b)-24-4] ^= 1; return b }),
	} {
		if _, err := unxz(b, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
