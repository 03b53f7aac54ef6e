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
	"github.com/ulikunitz/xz"
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
	out, err := decompress(payload)
	if err != nil {
		return nil, err
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
	if start+offset+length > len(image) || length == 0 {
		return nil, fmt.Errorf("bzImage payload (offset %d, length %d) lies outside the file (%d bytes)", start+offset, length, len(image))
	}
	return image[start+offset : start+offset+length], nil
}

func decompress(p []byte) ([]byte, error) {
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		r.Multistream(false) // the kernel appends its size after the gzip member
		return readAllTolerant(r)
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}):
		return lz4Legacy(p)
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return readAllTolerant(d)
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		r, err := xz.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		return readAllTolerant(r)
	}
	return nil, fmt.Errorf("bzImage payload compressed with an unsupported format (magic % x): supported are gzip, lz4, zstd, xz", p[:min(6, len(p))])
}

// lz4Legacy decodes the LZ4 legacy frame the kernel uses: after the magic, blocks of
// (4-byte little-endian compressed size, data), each decompressing to at most 8 MiB; the
// kernel's build appends the 4-byte uncompressed size, which ends the block list.
func lz4Legacy(p []byte) ([]byte, error) {
	const blockMax = 8 << 20
	var out bytes.Buffer
	buf := make([]byte, blockMax)
	p = p[4:]
	for len(p) >= 4 {
		n := int(binary.LittleEndian.Uint32(p))
		if n == 0x184c2102 { // a new legacy frame's magic
			p = p[4:]
			continue
		}
		if n > len(p)-4 {
			break // the appended size (or trailing padding), not a block
		}
		m, err := lz4.UncompressBlock(p[4:4+n], buf)
		if err != nil {
			return nil, fmt.Errorf("lz4 block: %w", err)
		}
		out.Write(buf[:m])
		p = p[4+n:]
	}
	if out.Len() == 0 {
		return nil, errors.New("lz4: no blocks")
	}
	return out.Bytes(), nil
}

// readAllTolerant keeps what was decoded when only trailing data (the kernel's appended
// size) upsets the decoder.
func readAllTolerant(r io.Reader) ([]byte, error) {
	out, err := io.ReadAll(r)
	if err != nil && !bytes.HasPrefix(out, elfMagic) {
		return nil, err
	}
	return out, nil
}
