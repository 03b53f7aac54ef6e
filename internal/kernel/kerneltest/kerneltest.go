// Package kerneltest makes kernel artifacts for tests: module objects with a .modinfo
// section, as kernel.ModuleTree reads them.
package kerneltest

import (
	"encoding/binary"
	"strings"
)

// Module builds a minimal ELF64 relocatable object with a .modinfo section.
func Module(modinfo ...string) []byte {
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
