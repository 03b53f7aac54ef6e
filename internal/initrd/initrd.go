// Package initrd writes the guest's initramfs as concatenated newc cpio archives: a base
// (firegopher-init and the kernel's modules) shared by every VM of a kernel, and a small
// per-VM layer (its config) appended to it. The kernel unpacks each archive in turn, so a
// later layer adds to or overrides the base without rewriting it.
package initrd

import (
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"
)

// File is one regular file of a layer.
type File struct {
	Path string // absolute path in the guest
	Mode cpio.FileMode
	Data []byte
}

// Layer is a set of files; the directories they need are created with mode 0755.
type Layer []File

// epoch makes archives reproducible: the same inputs give the same bytes, hence the same digest.
var epoch = time.Unix(0, 0)

// Write emits the layer as one complete cpio archive (with its trailer).
func (l Layer) Write(w io.Writer) error {
	cw := cpio.NewWriter(w)
	for _, dir := range l.dirs() {
		if err := cw.WriteHeader(&cpio.Header{Name: dir, Mode: cpio.TypeDir | 0o755, Links: 2, ModTime: epoch}); err != nil {
			return err
		}
	}
	for _, f := range l {
		name, err := relName(f.Path)
		if err != nil {
			return err
		}
		hdr := &cpio.Header{Name: name, Mode: cpio.TypeReg | f.Mode.Perm(), Links: 1, Size: int64(len(f.Data)), ModTime: epoch}
		if err := cw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := cw.Write(f.Data); err != nil {
			return err
		}
	}
	return cw.Close()
}

// dirs returns every parent directory of the layer's files, parents first.
func (l Layer) dirs() []string {
	seen := map[string]bool{}
	for _, f := range l {
		name, err := relName(f.Path)
		if err != nil {
			continue
		}
		for d := path.Dir(name); d != "." && !seen[d]; d = path.Dir(d) {
			seen[d] = true
		}
	}
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	// Lexical order puts "a" before "a/b": parents first.
	sort.Strings(out)
	return out
}

func relName(p string) (string, error) {
	clean := path.Clean("/" + p)
	if clean == "/" || clean != "/"+strings.TrimPrefix(p, "/") {
		return "", fmt.Errorf("initrd: bad path %q", p)
	}
	return strings.TrimPrefix(clean, "/"), nil
}
