// Package kernel turns a distribution's kernel into what a VMM boots and what a guest
// loads: the uncompressed ELF vmlinux (Firecracker on x86 accepts nothing else; QEMU boots
// it through its PVH note) and the guest's modules with their dependencies resolved.
package kernel

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

var elfMagic = []byte("\x7fELF")

// Vmlinux returns the uncompressed ELF kernel: image itself if it is an ELF, else the
// payload of an x86 bzImage, located through the boot protocol's setup header and
// decompressed (gzip, LZ4 legacy, zstd or xz).
func Vmlinux(image []byte) ([]byte, error) {
	if bytes.HasPrefix(image, elfMagic) {
		return image, nil
	}
	payload, err := bzImagePayload(image)
	if err != nil {
		return nil, err
	}
	// Whatever the format, the payload's last 4 bytes are the uncompressed size, little
	// endian: gzip's own ISIZE field, or appended by the kernel's build (size_append) for
	// the formats that lack one, because the decompressor stub needs it (mkpiggy). Checking
	// against it catches a truncated or mis-parsed payload that a decoder might let pass.
	size := binary.LittleEndian.Uint32(payload[len(payload)-4:])
	out, err := decompress(payload, size)
	if err != nil {
		return nil, err
	}
	if uint32(len(out)) != size {
		return nil, fmt.Errorf("bzImage payload decompressed to %d bytes, but the bzImage says %d", len(out), size)
	}
	if !bytes.HasPrefix(out, elfMagic) {
		return nil, errors.New("bzImage payload decompressed to something that is not an ELF kernel")
	}
	return out, nil
}

// bzImagePayload finds the compressed kernel inside a bzImage (boot protocol ≥ 2.08).
func bzImagePayload(image []byte) ([]byte, error) {
	if len(image) < 0x250 || string(image[0x202:0x206]) != "HdrS" {
		return nil, errors.New("neither an ELF vmlinux nor an x86 bzImage (no HdrS setup header)")
	}
	if version := binary.LittleEndian.Uint16(image[0x206:]); version < 0x208 {
		return nil, fmt.Errorf("bzImage boot protocol %#x predates payload fields (2.08)", version)
	}
	setupSects := int(image[0x1f1])
	if setupSects == 0 {
		setupSects = 4 // the boot protocol's historical default
	}
	start := (setupSects + 1) * 512
	offset := int(binary.LittleEndian.Uint32(image[0x248:]))
	length := int(binary.LittleEndian.Uint32(image[0x24c:]))
	if start+offset+length > len(image) || length < 8 {
		return nil, fmt.Errorf("bzImage payload (offset %d, length %d) does not fit the file (%d bytes)", start+offset, length, len(image))
	}
	return image[start+offset : start+offset+length], nil
}

// decompress decodes a bzImage payload whose uncompressed size is size.
func decompress(p []byte, size uint32) ([]byte, error) {
	// The size comes from the file, so it only sizes the first allocation, within reason.
	out := make([]byte, 0, min(int64(size), 32*int64(len(p))))
	// For all formats but gzip the size trailer is not part of the compressed stream.
	body := p[:len(p)-4]
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, fmt.Errorf("gzip payload: %w", err)
		}
		r.Multistream(false) // what may follow the member is not ours to judge
		buf := bytes.NewBuffer(out)
		if _, err := io.Copy(buf, r); err != nil {
			return nil, fmt.Errorf("gzip payload: %w", err)
		}
		return buf.Bytes(), nil
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}):
		return unlz4Legacy(body, out)
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		out, err = d.DecodeAll(body, out)
		if err != nil {
			return nil, fmt.Errorf("zstd payload: %w", err)
		}
		return out, nil
	case bytes.HasPrefix(p, xzMagic):
		out, err := unxz(body, out)
		if err != nil {
			return nil, fmt.Errorf("xz payload: %w", err)
		}
		return out, nil
	}
	// The kernel can also be built with these; name them rather than show bytes.
	for _, f := range []struct {
		name  string
		magic string
	}{{"bzip2", "BZh"}, {"lzma", "\x5d\x00\x00"}, {"lzo", "\x89LZO"}} {
		if bytes.HasPrefix(p, []byte(f.magic)) {
			return nil, fmt.Errorf("bzImage payload is %s-compressed, which is not supported (gzip, lz4, zstd and xz are)", f.name)
		}
	}
	return nil, fmt.Errorf("bzImage payload compressed with an unknown format (magic % x); supported are gzip, lz4, zstd and xz", p[:min(6, len(p))])
}

// unlz4Legacy decodes the LZ4 legacy frame that `lz4 -l` writes for the kernel: the
// magic, then blocks of (4-byte little-endian compressed size, data), each decompressing
// to at most 8 MiB. The frame has no end marker; it ends with p, which is why the
// kernel's size trailer must already be cut off. It appends to out.
func unlz4Legacy(p, out []byte) ([]byte, error) {
	const (
		magic    = 0x184c2102
		blockMax = 8 << 20
	)
	block := make([]byte, blockMax)
	for len(p) > 0 {
		if len(p) < 4 {
			return nil, errors.New("lz4 payload: truncated block header")
		}
		n := binary.LittleEndian.Uint32(p)
		p = p[4:]
		if n == magic { // the frame's start; lz4 may also start a new frame mid-stream
			continue
		}
		if int64(n) > int64(len(p)) {
			return nil, fmt.Errorf("lz4 payload: block of %d bytes, only %d left", n, len(p))
		}
		m, err := lz4.UncompressBlock(p[:n], block)
		if err != nil {
			return nil, fmt.Errorf("lz4 payload: %w", err)
		}
		out = append(out, block[:m]...)
		p = p[n:]
	}
	if len(out) == 0 {
		return nil, errors.New("lz4 payload: no blocks")
	}
	return out, nil
}
