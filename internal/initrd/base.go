package initrd

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// Base returns the cached base initramfs for a kernel and an init binary, building it on
// first use: firegopher-init as /init, the kernel's guest modules and their load order.
// It is keyed by both digests, so a new init or kernel gets a new base.
func Base(store *assets.Store, kernelDigest assets.Digest, k *assets.Kernel, initPath string) (string, error) {
	initBin, err := os.ReadFile(initPath)
	if err != nil {
		return "", fmt.Errorf("firegopher-init: %w", err)
	}
	initSum := sha256.Sum256(initBin)
	ref := fmt.Sprintf("initrd/k%s-i%s", kernelDigest.Short(), hex.EncodeToString(initSum[:6]))
	if d, err := store.Resolve(ref); err == nil {
		return store.Path(d), nil
	} else if !errors.Is(err, assets.ErrNotFound) {
		return "", err
	}
	layer := Layer{{Path: "/init", Mode: 0o755, Data: initBin}}
	var order strings.Builder
	for _, m := range k.Modules {
		data, err := os.ReadFile(store.Path(m.Digest))
		if err != nil {
			return "", fmt.Errorf("kernel module %s: %w", m.Path, err)
		}
		p := path.Join("/lib/modules", k.Version, m.Path)
		layer = append(layer, File{Path: p, Mode: 0o644, Data: data})
		order.WriteString(p + "\n")
	}
	if len(k.Modules) > 0 {
		layer = append(layer, File{Path: vmconfig.ModulesOrderPath, Mode: 0o644, Data: []byte(order.String())})
	}
	tmp, err := store.TempDir("initrd-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "base.cpio")
	if err := writeFile(out, layer.Write); err != nil {
		return "", err
	}
	d, err := store.Adopt(out)
	if err != nil {
		return "", err
	}
	return store.Path(d), store.Tag(ref, d)
}

// ForVM writes dst: the base followed by a layer holding the VM's config.
func ForVM(dst, base string, cfg *vmconfig.Config) error {
	data, err := cfg.Marshal()
	if err != nil {
		return err
	}
	return writeFile(dst, func(w io.Writer) error {
		src, err := os.Open(base)
		if err != nil {
			return err
		}
		defer src.Close()
		if _, err := io.Copy(w, src); err != nil {
			return err
		}
		return Layer{{Path: vmconfig.Path, Mode: 0o600, Data: data}}.Write(w)
	})
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
