// Package seed builds test fixtures in the shapes of falcosecurity/kernel-testing's kernel
// images (see /work/shared/kernel-testing.md §2.4, §4.1), from what this project already has:
// the cached default Debian kernel and Debian's static busybox.
//
// The initrd behaves like theirs: an uncompressed newc cpio of a busybox root whose /init
// mounts proc, sysfs and devtmpfs, runs depmod, modprobes virtio_mmio (with any "device="
// words of the command line), virtio_blk, virtio_net, ext4 and crc32c (errors ignored, as
// theirs), mounts /dev/vda on /mnt whatever root= says, brings eth0 up and asks DHCP with
// `udhcpc -t 5 -q -s /bin/simple.script` (busybox's example script: address, route,
// resolv.conf), replaces a symlinked /mnt/etc/resolv.conf with a copy of its own, and
// switch_roots to /sbin/init (or execs a shell if DEBUG is on the command line). The
// modules it carries are the non-built-in closure of those five names, at their paths under
// lib/modules/<version>/. The image is FROM scratch with /boot/vmlinux, /boot/initrd and an
// empty /lib/modules/.placeholder, one layer each.
package seed

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/kernel"
)

// InitModules are the names the seed's /init modprobes, in its order.
var InitModules = []string{"virtio_mmio", "virtio_blk", "virtio_net", "ext4", "crc32c"}

// Kernel is a kernel to build a fixture from.
type Kernel struct {
	Version string
	Vmlinux string // path of the ELF vmlinux
	// Modules is the kernel's lib/modules/<Version>: the whole tree of a distribution
	// package, or the subset the project's cache keeps (then built-in modules are unknown).
	Modules *kernel.ModuleTree
}

// CachedDefaultKernel finds the project's default kernel in the asset cache at cacheRoot
// (e.g. /var/lib/firegopher/cache), only reading it, and lays its cached modules out under
// dir/lib/modules/<version>/ so they form a module tree.
func CachedDefaultKernel(cacheRoot, dir string) (*Kernel, error) {
	if _, err := os.Stat(filepath.Join(cacheRoot, "refs")); err != nil {
		return nil, fmt.Errorf("asset cache %s: %w (run firegopher prepare)", cacheRoot, err)
	}
	store, err := assets.Open(cacheRoot)
	if err != nil {
		return nil, err
	}
	d, err := store.Resolve("kernel/default")
	if err != nil {
		return nil, fmt.Errorf("default kernel: %w (run firegopher prepare)", err)
	}
	k, err := store.LoadKernel(d)
	if err != nil {
		return nil, err
	}
	if k.Version == "" || strings.ContainsAny(k.Version, "/\x00") {
		return nil, fmt.Errorf("default kernel %s: version %q unusable as a directory name", d.Short(), k.Version)
	}
	tree := filepath.Join(dir, "lib", "modules", k.Version)
	for _, m := range k.Modules {
		if !filepath.IsLocal(m.Path) {
			return nil, fmt.Errorf("default kernel %s: module path %q escapes the tree", d.Short(), m.Path)
		}
		data, err := os.ReadFile(store.Path(m.Digest))
		if err != nil {
			return nil, fmt.Errorf("default kernel %s: module %s: %w", d.Short(), m.Path, err)
		}
		p := filepath.Join(tree, m.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return nil, err
	}
	mods, err := kernel.OpenModuleTree(tree)
	if err != nil {
		return nil, err
	}
	return &Kernel{Version: k.Version, Vmlinux: store.Path(k.Vmlinux), Modules: mods}, nil
}

// Initrd is a built initrd and what went into it.
type Initrd struct {
	Data []byte // uncompressed newc cpio
	// Modules are the files carried, relative to lib/modules/<version>, dependencies first.
	Modules []string
	// Absent are names of InitModules that are neither a module nor a module's alias in the
	// tree: built in, or missing. Their modprobe fails quietly at boot, as in the seed.
	Absent []string
}

// BusyboxPackage is the Debian package with a static busybox and its simple.script.
const BusyboxPackage = "busybox-static"

// SimpleScript is where Debian's busybox packages keep busybox's udhcpc example script,
// the one the seed downloads to /bin/simple.script.
var SimpleScript = "/usr/share/doc/" + BusyboxPackage + "/examples/udhcp/simple.script"

// StaticBusybox finds a statically linked busybox (the initrd has no libc).
func StaticBusybox() (string, error) {
	p, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("busybox not found: install the Debian package %s", BusyboxPackage)
	}
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("busybox %s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("busybox %s is dynamically linked: install the Debian package %s", p, BusyboxPackage)
		}
	}
	return p, nil
}

// BuildInitrd builds the seed-style initrd for k around the static busybox at busybox.
func BuildInitrd(k *Kernel, busybox string) (*Initrd, error) {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("initrd: %w", err)
	}
	script, err := os.ReadFile(SimpleScript)
	if err != nil {
		return nil, fmt.Errorf("initrd: udhcpc script: %w (from the Debian package %s)", err, BusyboxPackage)
	}
	applets, err := appletLinks(busybox)
	if err != nil {
		return nil, err
	}
	mods, absent, err := initModules(k.Modules, InitModules)
	if err != nil {
		return nil, err
	}

	entries := []entry{
		{name: "init", mode: typeReg | 0o755, data: []byte(initScript)},
		{name: "bin/busybox", mode: typeReg | 0o755, data: bb},
		{name: "bin/simple.script", mode: typeReg | 0o755, data: script},
		// The seed copies these three from its build host's /dev.
		{name: "dev/null", mode: typeChar | 0o666, major: 1, minor: 3},
		{name: "dev/console", mode: typeChar | 0o600, major: 5, minor: 1},
		{name: "dev/tty", mode: typeChar | 0o666, major: 5, minor: 0},
	}
	for _, d := range []string{"etc", "lib", "lib64", "mnt", "proc", "root", "sbin", "sys", "lib/modules/" + k.Version} {
		entries = append(entries, entry{name: d, mode: typeDir | 0o755})
	}
	for _, a := range applets {
		entries = append(entries, entry{name: a, mode: typeSymlink | 0o777, data: []byte(relTo(a, "bin/busybox"))})
	}
	out := &Initrd{Absent: absent}
	for _, m := range mods {
		data, err := k.Modules.Open(m)
		if err != nil {
			return nil, fmt.Errorf("initrd: module %s: %w", m.Name, err)
		}
		// Decompressed, under its uncompressed name: busybox's depmod and modprobe read
		// plain .ko files only, and the seed decompresses its modules the same way.
		rel := strings.TrimSuffix(strings.TrimSuffix(m.Path, ".xz"), ".zst")
		entries = append(entries, entry{name: "lib/modules/" + k.Version + "/" + filepath.ToSlash(rel), mode: typeReg | 0o644, data: data})
		out.Modules = append(out.Modules, rel)
	}
	var b bytes.Buffer
	if err := writeNewc(&b, entries); err != nil {
		return nil, fmt.Errorf("initrd: %w", err)
	}
	out.Data = b.Bytes()
	return out, nil
}

// initScript is the seed's /init, step for step (kernel-testing.md §2.4). Busybox's ash
// sets a default PATH when the kernel gives none, so the applet links are found.
const initScript = `#!/bin/busybox sh

mount -t proc none /proc
mount -t sysfs none /sys
mount -t devtmpfs dev /dev

depmod

if grep -q NOMODULES /proc/cmdline ; then
	echo "skipping kmods"
else
	modprobe virtio_mmio $(grep -o "device=[^ ]*" /proc/cmdline | paste -s)
	modprobe virtio_blk
	modprobe virtio_net
	modprobe ext4
	modprobe crc32c
fi

mount /dev/vda /mnt/

ifconfig eth0 up
udhcpc -t 5 -q -s /bin/simple.script

if [ -L /mnt/etc/resolv.conf ]; then
	unlink /mnt/etc/resolv.conf
	cat /etc/resolv.conf > /mnt/etc/resolv.conf
fi

if grep -q DEBUG /proc/cmdline ; then
	exec /bin/sh
else
	umount /proc
	umount /sys
	exec switch_root /mnt/ /sbin/init
fi
`

// appletLinks lists busybox's applets as paths relative to / ("bin/sh", "sbin/modprobe"),
// where the busybox image the seed starts from has them.
func appletLinks(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list-full: %w", err)
	}
	var links []string
	for _, l := range strings.Fields(string(out)) {
		l = strings.TrimPrefix(l, "/")
		if !filepath.IsLocal(l) || l == "bin/busybox" || strings.Count(l, "/") == 0 {
			continue
		}
		links = append(links, l)
	}
	slices.Sort(links)
	return slices.Compact(links), nil
}

// relTo is the symlink target that reaches target (relative to /) from link's directory.
func relTo(link, target string) string {
	up := strings.Repeat("../", strings.Count(path.Dir(link), "/")+1)
	if path.Dir(link) == path.Dir(target) {
		return path.Base(target)
	}
	return up + target
}

// initModules resolves names like `modprobe` would for the seed's create.sh: a name is a
// module, or an alias one or more modules declare (crc32c → crc32c_intel), or built in;
// every module's dependencies come first. Names that are none of these are returned as
// absent, not an error: a cache-only tree cannot tell built-in from missing.
func initModules(tree *kernel.ModuleTree, names []string) (mods []kernel.Module, absent []string, err error) {
	seen := map[string]bool{}
	var aliases map[string][]string
	for _, n := range names {
		resolved, err := tree.Resolve([]string{n})
		if err != nil {
			if aliases == nil {
				if aliases, err = moduleAliases(tree.Dir); err != nil {
					return nil, nil, err
				}
			}
			targets := aliases[kernel.Name(n)]
			if len(targets) == 0 {
				absent = append(absent, n)
				continue
			}
			if resolved, err = tree.Resolve(targets); err != nil {
				return nil, nil, fmt.Errorf("module %s (alias of %s): %w", n, strings.Join(targets, ", "), err)
			}
		}
		for _, m := range resolved {
			if !seen[m.Path] {
				seen[m.Path] = true
				mods = append(mods, m)
			}
		}
	}
	return mods, absent, nil
}

// moduleAliases maps each plain alias (no wildcard) declared in a module's .modinfo to the
// modules declaring it.
func moduleAliases(dir string) (map[string][]string, error) {
	tree, err := kernel.OpenModuleTree(dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".ko") || strings.HasSuffix(p, ".ko.xz") || strings.HasSuffix(p, ".ko.zst")) {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := tree.Open(kernel.Module{Name: kernel.Name(rel), Path: rel})
		if err != nil {
			return err
		}
		for _, a := range modinfoValues(data, "alias") {
			if !strings.ContainsAny(a, "*?[") {
				out[kernel.Name(a)] = append(out[kernel.Name(a)], kernel.Name(rel))
			}
		}
		return nil
	})
	return out, err
}

// modinfoValues returns the values of key in an ELF module's .modinfo section.
func modinfoValues(ko []byte, key string) []string {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil
	}
	raw, err := sec.Data()
	if err != nil {
		return nil
	}
	var out []string
	for _, kv := range bytes.Split(raw, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok && k == key {
			out = append(out, v)
		}
	}
	return out
}
