package seed

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// layerTime is every entry's mtime, so the same inputs give the same digests.
var layerTime = time.Unix(0, 0).UTC()

// KernelImage is the seed's kernel image (Dockerfile.kernel: FROM scratch; COPY vmlinux
// /boot/; COPY initrd /boot/; COPY .placeholder /lib/modules/): three layers, one file each
// plus its directories, linux/amd64, no Cmd or Entrypoint.
func KernelImage(vmlinux, initrd []byte) (v1.Image, error) {
	var layers []v1.Layer
	for _, f := range []struct {
		dirs []string
		name string
		data []byte
	}{
		{[]string{"boot/"}, "boot/vmlinux", vmlinux},
		{[]string{"boot/"}, "boot/initrd", initrd},
		{[]string{"lib/", "lib/modules/"}, "lib/modules/.placeholder", nil},
	} {
		blob, err := tarOf(f.dirs, f.name, f.data)
		if err != nil {
			return nil, err
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(blob)), nil
		})
		if err != nil {
			return nil, fmt.Errorf("kernel image: layer %s: %w", f.name, err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, fmt.Errorf("kernel image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: layerTime}
	return mutate.ConfigFile(img, cf)
}

func tarOf(dirs []string, name string, data []byte) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: layerTime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: layerTime, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
