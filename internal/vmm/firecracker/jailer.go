package firecracker

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/firegopher/firegopher/internal/vmm"
)

// JailerConfig describes running Firecracker under its jailer (chroot, uid/gid drop,
// optional network namespace).
type JailerConfig struct {
	Binary     string // jailer
	UID, GID   int
	ChrootBase string // "" means DefaultChrootBase
	ID         string // the VM's id: letters, digits and '-', at most 64 characters
	NetNS      string // path of a network namespace to join, e.g. /var/run/netns/fg0; "" for none
}

// DefaultChrootBase is the jailer's own default --chroot-base-dir.
const DefaultChrootBase = "/srv/jailer"

// JailedAPISocket is the API socket's path as Firecracker sees it inside the chroot.
const JailedAPISocket = "/" + APISocketName

// Validate checks what the jailer itself would reject.
func (c JailerConfig) Validate() error {
	switch {
	case c.Binary == "":
		return fmt.Errorf("jailer: binary: empty")
	case c.ID == "" || len(c.ID) > 64:
		return fmt.Errorf("jailer: id %q: want 1 to 64 characters", c.ID)
	case c.UID < 0 || c.GID < 0:
		return fmt.Errorf("jailer: uid/gid %d/%d: want non-negative", c.UID, c.GID)
	case c.ChrootBase != "" && !filepath.IsAbs(c.ChrootBase):
		return fmt.Errorf("jailer: chroot base %q: want an absolute path", c.ChrootBase)
	}
	for _, r := range c.ID {
		if r != '-' && !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return fmt.Errorf("jailer: id %q: want only letters, digits and '-'", c.ID)
		}
	}
	return nil
}

func (c JailerConfig) chrootBase() string {
	if c.ChrootBase == "" {
		return DefaultChrootBase
	}
	return c.ChrootBase
}

// ChrootDir is the jail's root on the host: <chroot-base>/firecracker/<id>/root (the jailer
// names the middle directory after the exec file, which must be called "firecracker").
func ChrootDir(cfg JailerConfig) string {
	return filepath.Join(cfg.chrootBase(), "firecracker", cfg.ID, "root")
}

// JailerArgs is the jailer's argument list (without argv[0], as for exec.Command(cfg.Binary,
// ...)). It runs firecrackerPath in the foreground (no --daemonize: we own the process and
// its exit status) with the API socket at JailedAPISocket inside the chroot.
func JailerArgs(cfg JailerConfig, firecrackerPath string) []string {
	args := []string{
		"--id", cfg.ID,
		"--exec-file", firecrackerPath,
		"--uid", strconv.Itoa(cfg.UID),
		"--gid", strconv.Itoa(cfg.GID),
		"--chroot-base-dir", cfg.chrootBase(),
	}
	if cfg.NetNS != "" {
		args = append(args, "--netns", cfg.NetNS)
	}
	return append(args, "--", "--api-sock", JailedAPISocket)
}

// ChrootFiles maps each host file the VM needs (kernel, initrd, disks) to the host path of its
// hard link inside ChrootDir(cfg). Names are fixed rather than the host basenames so two disks
// called rootfs.img cannot collide; a file's path in the API is "/" + the link's base name.
func ChrootFiles(cfg JailerConfig, spec vmm.Spec) map[string]string {
	root := ChrootDir(cfg)
	files := map[string]string{}
	if spec.Kernel != "" {
		files[spec.Kernel] = filepath.Join(root, "vmlinux")
	}
	if spec.Initrd != "" {
		files[spec.Initrd] = filepath.Join(root, "initrd")
	}
	for i, d := range spec.Disks {
		name := "drive-" + d.Serial
		if d.Serial == "" {
			name = "drive" + strconv.Itoa(i)
		}
		files[d.Path] = filepath.Join(root, name)
	}
	return files
}
