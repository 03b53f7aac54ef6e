package seed

import (
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// entry is one member of a newc archive. The project's cpio library writes no device
// numbers, and the seed's initrd needs /dev/console as a real character device: without it
// the kernel gives /init no stdout ("unable to open an initial console").
type entry struct {
	name         string // relative, no leading slash
	mode         uint32 // type and permission bits, as in st_mode
	data         []byte // file content, or symlink target
	major, minor uint32 // device numbers of a character device
}

const (
	typeDir     = 0o040000
	typeReg     = 0o100000
	typeSymlink = 0o120000
	typeChar    = 0o020000
)

// writeNewc writes entries as one uncompressed "newc" (SVR4, no CRC) archive, directories
// implied by paths added first, everything in lexical order, with a trailer: the format
// `cpio --format=newc` makes and the kernel unpacks. Owners are 0:0, mtimes 0.
func writeNewc(w io.Writer, entries []entry) error {
	byName := map[string]entry{}
	for _, e := range entries {
		if e.name == "" || strings.HasPrefix(e.name, "/") || path.Clean(e.name) != e.name || strings.HasPrefix(e.name, "../") {
			return fmt.Errorf("newc: bad name %q", e.name)
		}
		if _, dup := byName[e.name]; dup {
			return fmt.Errorf("newc: %q twice", e.name)
		}
		byName[e.name] = e
	}
	for _, e := range entries {
		for d := path.Dir(e.name); d != "."; d = path.Dir(d) {
			if have, ok := byName[d]; ok {
				if have.mode&0o170000 != typeDir {
					return fmt.Errorf("newc: %q is inside %q, which is not a directory", e.name, d)
				}
				continue
			}
			byName[d] = entry{name: d, mode: typeDir | 0o755}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names) // "a" sorts before "a/b": parents first
	ino := int64(1)
	for _, n := range names {
		e := byName[n]
		nlink := int64(1)
		if e.mode&0o170000 == typeDir {
			nlink = 2
		}
		if err := writeMember(w, ino, e, nlink); err != nil {
			return err
		}
		ino++
	}
	return writeMember(w, 0, entry{name: "TRAILER!!!"}, 1)
}

func writeMember(w io.Writer, ino int64, e entry, nlink int64) error {
	name := e.name + "\x00"
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.major, e.minor, len(name), 0)
	buf := make([]byte, 0, len(hdr)+len(name)+3+len(e.data)+3)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	buf = append(buf, e.data...)
	buf = append(buf, make([]byte, pad4(len(e.data)))...)
	_, err := w.Write(buf)
	return err
}

func pad4(n int) int { return (4 - n%4) % 4 }
