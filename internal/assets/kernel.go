package assets

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/firegopher/firegopher/internal/kernel"
)

// DefaultKernelPackage is Debian's cloud kernel: small, virtio drivers as modules.
const DefaultKernelPackage = "linux-image-cloud-amd64"

// Kernel is a kernel manifest: the ELF the VMM boots and the modules the guest loads.
type Kernel struct {
	Source  string `json:"source"`
	Version string `json:"version,omitempty"`
	Vmlinux Digest `json:"vmlinux"`
	// Initrd is the kernel image's own initramfs (the seed's /boot/initrd), for system VMs
	// that boot through it; app VMs use firegopher's initrd instead.
	Initrd  Digest   `json:"initrd,omitempty"`
	Modules []Module `json:"modules,omitempty"` // in load order, dependencies first
}

// Module is one kernel module; Path is relative to /lib/modules/<version>.
type Module struct {
	Path   string `json:"path"`
	Digest Digest `json:"digest"`
}

// LoadKernel reads a kernel manifest.
func (s *Store) LoadKernel(d Digest) (*Kernel, error) {
	var k Kernel
	if err := s.GetJSON(d, &k); err != nil {
		return nil, err
	}
	if !s.Has(k.Vmlinux) {
		return nil, fmt.Errorf("kernel %s: vmlinux %s: %w", d.Short(), k.Vmlinux.Short(), ErrNotFound)
	}
	return &k, nil
}

// DefaultKernel returns the default kernel, building it from Debian's package on first use.
func (s *Store) DefaultKernel(ctx context.Context, log *slog.Logger) (Digest, *Kernel, error) {
	return s.DebKernel(ctx, "default", DefaultKernelPackage, log)
}

// DebKernel returns the kernel named name, made on first use from the distribution
// package pkg (fetched with apt; a metapackage is followed to its versioned image).
func (s *Store) DebKernel(ctx context.Context, name, pkg string, log *slog.Logger) (Digest, *Kernel, error) {
	return buildOnce(ctx, s, "kernel/"+name, s.LoadKernel, func() (Digest, *Kernel, error) {
		return s.buildDebKernel(ctx, name, pkg, log)
	})
}

// buildDebKernel fetches pkg and stores its kernel, untagged.
func (s *Store) buildDebKernel(ctx context.Context, name, pkg string, log *slog.Logger) (Digest, *Kernel, error) {
	log.Info("preparing kernel "+name+" (first use only)", "package", pkg)
	tmp, err := s.TempDir("kernel-*")
	if err != nil {
		return "", nil, err
	}
	defer os.RemoveAll(tmp)
	deb, err := downloadKernelDeb(ctx, pkg, tmp)
	if err != nil {
		return "", nil, err
	}
	d, k, err := s.ImportKernelDeb(ctx, deb)
	if err != nil {
		return "", nil, err
	}
	log.Info("kernel "+name+" ready", "version", k.Version, "modules", len(k.Modules), "digest", d.Short())
	return d, k, nil
}

// ImportKernelDeb stores the kernel and guest modules of a Debian linux-image package.
func (s *Store) ImportKernelDeb(ctx context.Context, debPath string) (Digest, *Kernel, error) {
	if err := requireTool("dpkg-deb", "dpkg"); err != nil {
		return "", nil, err
	}
	tmp, err := s.TempDir("deb-*")
	if err != nil {
		return "", nil, err
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debPath, tmp).CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("unpack %s: %v: %s", debPath, err, strings.TrimSpace(string(out)))
	}
	images, _ := filepath.Glob(filepath.Join(tmp, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return "", nil, fmt.Errorf("%s: want one boot/vmlinuz-*, found %d: is it a linux-image package?", debPath, len(images))
	}
	k := &Kernel{Source: "deb:" + filepath.Base(debPath), Version: strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")}
	if k.Vmlinux, err = s.putVmlinux(images[0]); err != nil {
		return "", nil, err
	}
	tree, err := kernel.OpenModuleTree(filepath.Join(tmp, "lib", "modules", k.Version))
	if err != nil {
		return "", nil, err
	}
	mods, err := tree.Resolve(kernel.GuestModules)
	if err != nil {
		return "", nil, err
	}
	for _, m := range mods {
		data, err := tree.Open(m)
		if err != nil {
			return "", nil, err
		}
		d, err := s.PutBytes(data)
		if err != nil {
			return "", nil, err
		}
		k.Modules = append(k.Modules, Module{Path: strings.TrimSuffix(strings.TrimSuffix(m.Path, ".xz"), ".zst"), Digest: d})
	}
	d, err := s.PutJSON(k)
	return d, k, err
}

// ImportKernelFile stores a bare kernel (ELF vmlinux or bzImage). It brings no modules,
// so its virtio drivers must be built in.
func (s *Store) ImportKernelFile(path string) (Digest, *Kernel, error) {
	k := &Kernel{Source: "file:" + path}
	var err error
	if k.Vmlinux, err = s.putVmlinux(path); err != nil {
		return "", nil, err
	}
	d, err := s.PutJSON(k)
	return d, k, err
}

func (s *Store) putVmlinux(path string) (Digest, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	elf, err := kernel.Vmlinux(raw)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", path, err)
	}
	return s.PutBytes(elf)
}

// downloadKernelDeb fetches pkg with apt into dir, following a metapackage to the
// versioned linux-image package it depends on.
func downloadKernelDeb(ctx context.Context, pkg, dir string) (string, error) {
	if err := requireTool("apt-get", "apt"); err != nil {
		return "", err
	}
	for hop := 0; hop < 2; hop++ {
		cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get download %s: %v: %s (run apt-get update first?)", pkg, err, lastLine(out))
		}
		debs, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
		if len(debs) != 1 {
			return "", fmt.Errorf("apt-get download %s: no .deb appeared in %s", pkg, dir)
		}
		out, err := exec.CommandContext(ctx, "dpkg-deb", "-f", debs[0], "Depends").Output()
		if err != nil {
			return "", fmt.Errorf("read %s: %w", debs[0], err)
		}
		next := versionedImage(string(out))
		if next == "" {
			return debs[0], nil
		}
		pkg = next
	}
	return "", fmt.Errorf("%s: metapackage chain too deep", pkg)
}

// versionedImage picks "linux-image-<version>" out of a metapackage's Depends, or "".
func versionedImage(depends string) string {
	for _, dep := range strings.Split(depends, ",") {
		name, _, _ := strings.Cut(strings.TrimSpace(dep), " ")
		if strings.HasPrefix(name, "linux-image-") && len(name) > len("linux-image-") && name[len("linux-image-")] >= '0' && name[len("linux-image-")] <= '9' {
			return name
		}
	}
	return ""
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// requireTool checks a host tool exists and names the Debian package that provides it.
func requireTool(name, pkg string) error {
	if _, err := exec.LookPath(name); err != nil {
		return fmt.Errorf("%s not found: install the Debian package %s", name, pkg)
	}
	return nil
}
