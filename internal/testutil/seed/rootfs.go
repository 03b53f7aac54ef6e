package seed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// RootfsPackages are what kernel-testing's rootfs images carry that their playbooks need:
// systemd as init, sshd, python3 for Ansible, rsync for synchronize.
var RootfsPackages = "systemd,systemd-sysv,openssh-server,python3,rsync,iproute2"

// RootfsImage is an ordinary one-layer container image like kernel-testing's rootfs images:
// Debian bookworm with RootfsPackages, bootstrapped by mmdebstrap into dir (a tarball there).
// Like their images: no network configuration, host keys baked in, an empty machine-id.
func RootfsImage(ctx context.Context, dir string) (v1.Image, error) {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return nil, fmt.Errorf("mmdebstrap not found: install the Debian package mmdebstrap")
	}
	tarPath := filepath.Join(dir, "rootfs.tar")
	cmd := exec.CommandContext(ctx, "mmdebstrap", "--variant=apt", "--quiet", "--include="+RootfsPackages,
		`--customize-hook=echo "UseDNS no" >> "$1/etc/ssh/sshd_config"`,
		`--customize-hook=rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"`,
		"bookworm", tarPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tarPath)
		return nil, fmt.Errorf("mmdebstrap: %v\n%s", err, out)
	}
	layer, err := tarball.LayerFromFile(tarPath)
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(empty.Image, layer)
}

// DefaultKernelImage is KernelImage made from the cached default kernel (under cacheRoot)
// and Debian's busybox-static, with scratch files in dir.
func DefaultKernelImage(cacheRoot, dir string) (v1.Image, error) {
	k, err := CachedDefaultKernel(cacheRoot, dir)
	if err != nil {
		return nil, err
	}
	busybox, err := StaticBusybox()
	if err != nil {
		return nil, err
	}
	rd, err := BuildInitrd(k, busybox)
	if err != nil {
		return nil, err
	}
	vmlinux, err := os.ReadFile(k.Vmlinux)
	if err != nil {
		return nil, err
	}
	return KernelImage(vmlinux, rd.Data)
}
