// Package busyboximage writes a small container image for tests and benchmarks: Debian's
// static busybox with its applets as links, a passwd/group with a user, one data file.
package busyboximage

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Busybox is where Debian's busybox-static installs it.
const Busybox = "/bin/busybox"

// Applets are the busybox commands the image has as links in /bin.
var Applets = []string{"sh", "echo", "cat", "id", "pwd", "env", "sleep", "true", "false", "printf", "ls",
	"hostname", "tr", "wc", "test", "grep", "httpd", "ip"}

// Write writes a docker-archive tar (what `ctr image import` and `docker load` read) at path
// holding one image per reference, all of the same layer; users maps a reference to the
// image config's user ("" for root). PATH=/bin, FROM_IMAGE=yes, command sh.
func Write(path string, users map[string]string) error {
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return errors.New(Busybox + ": install the Debian package busybox-static")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, data []byte) {
		h.Size = int64(len(data))
		tw.WriteHeader(h)
		tw.Write(data)
	}
	for _, d := range []string{"bin/", "etc/", "proc/", "sys/", "dev/", "root/", "run/", "srv/", "srv/data/", "home/"} {
		add(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755}, nil)
	}
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}, nil)
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "home/user/", Mode: 0o755, Uid: 1000, Gid: 1000}, nil)
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755}, bb)
	for _, applet := range Applets {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox"})
	}
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, []byte("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"))
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644}, []byte("root:x:0:\nuser:x:1000:\nextra:x:2000:user\n"))
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "srv/data/hello.txt", Mode: 0o644}, []byte("hello from the image\n"))
	if err := tw.Close(); err != nil {
		return err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return err
	}
	images := map[name.Reference]v1.Image{}
	for ref, user := range users {
		// The config first, then the layer: AppendLayers adds its diff id to the config.
		base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
			Architecture: "amd64", OS: "linux",
			Config: v1.Config{Env: []string{"PATH=/bin", "FROM_IMAGE=yes"}, Cmd: []string{"sh"}, User: user},
			RootFS: v1.RootFS{Type: "layers"},
		})
		if err != nil {
			return err
		}
		img, err := mutate.AppendLayers(base, layer)
		if err != nil {
			return err
		}
		r, err := name.ParseReference(ref)
		if err != nil {
			return err
		}
		images[r] = img
	}
	return tarball.MultiRefWriteToFile(path, images)
}
