package kernel

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// xzMagic starts an .xz stream.
var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

var crc64Table = crc64.MakeTable(crc64.ECMA) // as .xz uses it: reflected, inverted

// unxz decodes .xz data, one or more streams, appending to out. github.com/ulikunitz/xz's own reader will
// not do: the kernel's scripts/xz_wrap.sh always adds the architecture's branch/call/jump
// filter (--x86 here), which that package does not implement. So this walks the container
// itself, leaves the LZMA2 data to that package's lzma.Reader2 and undoes the x86 filter.
func unxz(p, out []byte) ([]byte, error) {
	for {
		var err error
		if out, p, err = unxzStream(p, out); err != nil {
			return nil, err
		}
		// Streams may be followed by padding: zero bytes, a multiple of 4.
		n := 0
		for n < len(p) && p[n] == 0 {
			n++
		}
		if n%4 != 0 {
			return nil, errors.New("xz: stream padding is not a multiple of 4 bytes")
		}
		if p = p[n:]; len(p) == 0 {
			return out, nil
		}
	}
}

// unxzStream decodes the stream at the start of p, appending to out; it returns what
// follows the stream.
func unxzStream(p, out []byte) ([]byte, []byte, error) {
	if len(p) < 12 || !bytes.HasPrefix(p, xzMagic) {
		return nil, nil, errors.New("xz: no stream header")
	}
	flags := p[6:8]
	if crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(p[8:]) {
		return nil, nil, errors.New("xz: stream header CRC mismatch")
	}
	if flags[0] != 0 || flags[1] > 0x0f {
		return nil, nil, fmt.Errorf("xz: unsupported stream flags % x", flags)
	}
	check := flags[1]
	p = p[12:]

	type record struct{ unpadded, uncompressed uint64 }
	var blocks []record
	for len(p) > 0 && p[0] != 0 { // 0 is the index indicator; a block header's size is not
		start := len(out)
		var unpadded uint64
		var err error
		if out, p, unpadded, err = unxzBlock(p, check, out); err != nil {
			return nil, nil, err
		}
		blocks = append(blocks, record{unpadded, uint64(len(out) - start)})
	}

	// The index repeats every block's sizes; a mismatch means a damaged stream.
	if len(p) == 0 {
		return nil, nil, io.ErrUnexpectedEOF
	}
	idx := p[1:]
	count, err := vli(&idx)
	if err != nil {
		return nil, nil, err
	}
	if count != uint64(len(blocks)) {
		return nil, nil, fmt.Errorf("xz: index lists %d blocks, the stream has %d", count, len(blocks))
	}
	for _, b := range blocks {
		unpadded, err := vli(&idx)
		if err != nil {
			return nil, nil, err
		}
		uncompressed, err := vli(&idx)
		if err != nil {
			return nil, nil, err
		}
		if unpadded != b.unpadded || uncompressed != b.uncompressed {
			return nil, nil, errors.New("xz: index does not match the blocks")
		}
	}
	size := (len(p) - len(idx) + 3) &^ 3 // padded to 4, then its CRC32
	if size+4+12 > len(p) {
		return nil, nil, io.ErrUnexpectedEOF
	}
	if !allZero(p[len(p)-len(idx) : size]) {
		return nil, nil, errors.New("xz: non-zero index padding")
	}
	if crc32.ChecksumIEEE(p[:size]) != binary.LittleEndian.Uint32(p[size:]) {
		return nil, nil, errors.New("xz: index CRC mismatch")
	}
	size += 4

	footer := p[size : size+12]
	if crc32.ChecksumIEEE(footer[4:10]) != binary.LittleEndian.Uint32(footer) ||
		(int(binary.LittleEndian.Uint32(footer[4:]))+1)*4 != size ||
		!bytes.Equal(footer[8:10], flags) || string(footer[10:]) != "YZ" {
		return nil, nil, errors.New("xz: bad stream footer")
	}
	return out, p[size+12:], nil
}

// unxzBlock decodes the block at the start of p, appending to out. It returns what
// follows the block and the block's unpadded size, which the index records.
func unxzBlock(p []byte, check byte, out []byte) (_, rest []byte, unpadded uint64, _ error) {
	hsize := (int(p[0]) + 1) * 4
	if len(p) < hsize {
		return nil, nil, 0, io.ErrUnexpectedEOF
	}
	if crc32.ChecksumIEEE(p[:hsize-4]) != binary.LittleEndian.Uint32(p[hsize-4:]) {
		return nil, nil, 0, errors.New("xz: block header CRC mismatch")
	}
	flags := p[1]
	if flags&0x3c != 0 {
		return nil, nil, 0, fmt.Errorf("xz: unsupported block flags %#x", flags)
	}
	h := p[2 : hsize-4]
	compressed, uncompressed := int64(-1), int64(-1) // unknown unless the header says
	for _, f := range []struct {
		bit  byte
		size *int64
	}{{0x40, &compressed}, {0x80, &uncompressed}} {
		if flags&f.bit != 0 {
			v, err := vli(&h)
			if err != nil {
				return nil, nil, 0, err
			}
			*f.size = int64(v) // at most 63 bits
		}
	}

	var dictCap int64
	var bcj bool
	var bcjStart uint32
	filters := int(flags&3) + 1
	for i := range filters {
		id, err := vli(&h)
		if err != nil {
			return nil, nil, 0, err
		}
		n, err := vli(&h)
		if err != nil {
			return nil, nil, 0, err
		}
		if n > uint64(len(h)) {
			return nil, nil, 0, errors.New("xz: bad block header")
		}
		props := h[:n]
		h = h[n:]
		switch last := i == filters-1; {
		case id == 0x21 && last && len(props) == 1: // LZMA2
			if dictCap, err = lzma.DecodeDictCap(props[0]); err != nil {
				return nil, nil, 0, fmt.Errorf("xz: %w", err)
			}
		case id == 0x04 && !last && !bcj && (len(props) == 0 || len(props) == 4): // x86 BCJ
			bcj = true
			if len(props) == 4 {
				bcjStart = binary.LittleEndian.Uint32(props)
			}
		default:
			return nil, nil, 0, fmt.Errorf("xz: unsupported filter chain (filter %#x); only x86 BCJ and LZMA2 are", id)
		}
	}
	if !allZero(h) {
		return nil, nil, 0, errors.New("xz: non-zero block header padding")
	}
	if uncompressed >= 0 {
		// LZMA2 never refers back further than the output so far: a dictionary larger
		// than the block would be memory for nothing.
		dictCap = min(dictCap, max(uncompressed, lzma.MinDictCap))
	}

	data := p[hsize:]
	r := bytes.NewReader(data) // an io.ByteReader, so lzma reads exactly the block's bytes
	lz, err := lzma.Reader2Config{DictCap: int(dictCap)}.NewReader2(r)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("xz: %w", err)
	}
	start := len(out)
	buf := bytes.NewBuffer(out)
	if uncompressed >= 0 {
		buf.Grow(int(min(uncompressed, 32*int64(len(data)))))
	}
	if _, err := io.Copy(buf, lz); err != nil {
		return nil, nil, 0, fmt.Errorf("xz: %w", err)
	}
	out = buf.Bytes()
	block := out[start:]
	consumed := int64(len(data) - r.Len())
	if compressed >= 0 && compressed != consumed || uncompressed >= 0 && uncompressed != int64(len(block)) {
		return nil, nil, 0, errors.New("xz: block sizes do not match its header")
	}
	if bcj {
		unBCJx86(block, bcjStart)
	}

	rest = data[consumed:]
	pad := int(-consumed & 3) // to a multiple of 4
	sum := checkSize(check)
	if len(rest) < pad+sum {
		return nil, nil, 0, io.ErrUnexpectedEOF
	}
	if !allZero(rest[:pad]) {
		return nil, nil, 0, errors.New("xz: non-zero block padding")
	}
	if err := verifyCheck(check, block, rest[pad:pad+sum]); err != nil {
		return nil, nil, 0, err
	}
	return out, rest[pad+sum:], uint64(int64(hsize) + consumed + int64(sum)), nil
}

// checkSize is the size of a block's check field for a check type.
func checkSize(check byte) int {
	if check == 0 {
		return 0
	}
	return 4 << ((check - 1) / 3)
}

// verifyCheck verifies the checks xz can write; others are skipped, as the format allows.
func verifyCheck(check byte, data, sum []byte) error {
	var ok bool
	switch check {
	case 1:
		ok = crc32.ChecksumIEEE(data) == binary.LittleEndian.Uint32(sum)
	case 4:
		ok = crc64.Checksum(data, crc64Table) == binary.LittleEndian.Uint64(sum)
	case 10:
		h := sha256.Sum256(data)
		ok = bytes.Equal(h[:], sum)
	default:
		ok = true
	}
	if !ok {
		return errors.New("xz: block check mismatch (corrupt data)")
	}
	return nil
}

// vli consumes one of .xz's variable-length integers from the start of *p.
func vli(p *[]byte) (uint64, error) {
	var v uint64
	for i, b := range *p {
		if i == 9 {
			break
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			if i > 0 && b == 0 {
				break // not the shortest encoding, which the format requires
			}
			*p = (*p)[i+1:]
			return v, nil
		}
	}
	return 0, errors.New("xz: bad variable-length integer")
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// unBCJx86 undoes, in place, the x86 branch/call/jump filter that xz's --x86 applies:
// the filter turns the relative targets of E8 (call) and E9 (jmp) instructions into
// absolute ones, which compress better. It is liblzma's x86_code in the decoding
// direction, run over a whole block; start is the filter's start offset property.
func unBCJx86(buf []byte, start uint32) {
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msByte := func(b byte) bool { return b == 0 || b == 0xff } // a plausible near target

	var prevMask uint32
	prevPos := start - 5
	for i := 0; i+5 <= len(buf); {
		if buf[i] != 0xe8 && buf[i] != 0xe9 {
			i++
			continue
		}
		pos := start + uint32(i)
		if offset := pos - prevPos; offset > 5 {
			prevMask = 0
		} else {
			for range offset {
				prevMask = (prevMask & 0x77) << 1
			}
		}
		prevPos = pos

		b := buf[i+4]
		if !msByte(b) || !allowed[(prevMask>>1)&7] || prevMask>>1 >= 0x10 {
			i++
			prevMask |= 1
			if msByte(b) {
				prevMask |= 0x10
			}
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (pos + 5)
			if prevMask == 0 {
				break
			}
			j := bitNum[(prevMask>>1)&7] * 8
			if !msByte(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		// Bits 24..31 become copies of bit 24: the target sign-extended from 25 bits.
		dest = dest&0x01ffffff | -(dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 5
		prevMask = 0
	}
}
