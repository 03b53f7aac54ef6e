package kernel

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// GuestModules are what our guests need on QEMU (virtio-pci) and Firecracker (virtio-mmio,
// vsock); names that a kernel has built in are satisfied without loading anything.
var GuestModules = []string{"virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtio_rng", "vmw_vsock_virtio_transport"}

// Module is one loadable module; Path is relative to the tree's directory.
type Module struct {
	Name string
	Path string
}

// ModuleTree is a kernel's lib/modules/<version> as a distribution ships it: .ko files
// (maybe .xz or .zst compressed) and modules.builtin, but not always modules.dep.
type ModuleTree struct {
	Dir     string
	modules map[string]string // name → relative path
	builtin map[string]bool
}

// Name normalises a module's name as the kernel does: '-' and '_' are the same.
func Name(s string) string {
	base := filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz", ".ko"} {
		base = strings.TrimSuffix(base, ext)
	}
	return strings.ReplaceAll(base, "-", "_")
}

// OpenModuleTree indexes the modules below dir.
func OpenModuleTree(dir string) (*ModuleTree, error) {
	t := &ModuleTree{Dir: dir, modules: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".ko") || strings.HasSuffix(p, ".ko.xz") || strings.HasSuffix(p, ".ko.zst")) {
			rel, _ := filepath.Rel(dir, p)
			t.modules[Name(p)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("module tree %s: %w", dir, err)
	}
	if f, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" {
				t.builtin[Name(line)] = true
			}
		}
		f.Close()
	}
	return t, nil
}

// Version is the kernel release the tree belongs to.
func (t *ModuleTree) Version() string { return filepath.Base(t.Dir) }

// Resolve returns the modules to load for want, dependencies first, each once. It reads
// each module's .modinfo "depends=" (and "softdep=pre:" where present in the tree);
// built-in names are satisfied silently; unknown names are an error naming them all.
func (t *ModuleTree) Resolve(want []string) ([]Module, error) {
	var out []Module
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var unknown []string
	var visit func(name string) error
	visit = func(name string) error {
		name = Name(name)
		if state[name] != 0 {
			return nil // done, or a cycle: the kernel resolves cycles at load time
		}
		rel, ok := t.modules[name]
		if !ok {
			if !t.builtin[name] {
				unknown = append(unknown, name)
			}
			state[name] = 2
			return nil
		}
		state[name] = 1
		info, err := t.modinfo(rel)
		if err != nil {
			return err
		}
		for _, dep := range info["depends"] {
			if err := visit(dep); err != nil {
				return err
			}
		}
		for _, dep := range info["softdep-pre"] {
			if _, present := t.modules[Name(dep)]; present {
				if err := visit(dep); err != nil {
					return err
				}
			}
		}
		state[name] = 2
		out = append(out, Module{Name: name, Path: rel})
		return nil
	}
	for _, w := range want {
		if err := visit(w); err != nil {
			return nil, err
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("kernel %s has no module %s (neither built in nor in the tree)", t.Version(), strings.Join(unknown, ", "))
	}
	return out, nil
}

// Open returns the module's uncompressed bytes.
func (t *ModuleTree) Open(m Module) ([]byte, error) {
	f, err := os.Open(filepath.Join(t.Dir, m.Path))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(m.Path, ".xz"):
		if r, err = xz.NewReader(f); err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Name, err)
		}
	case strings.HasSuffix(m.Path, ".zst"):
		d, err := zstd.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Name, err)
		}
		defer d.Close()
		r = d
	}
	return io.ReadAll(r)
}

// modinfo reads a module's .modinfo section: NUL-separated key=value strings.
func (t *ModuleTree) modinfo(rel string) (map[string][]string, error) {
	data, err := t.Open(Module{Name: Name(rel), Path: rel})
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", rel, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s: no .modinfo section", rel)
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", rel, err)
	}
	info := map[string][]string{}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					info["depends"] = append(info["depends"], d)
				}
			}
		case "softdep":
			// "pre: a b post: c"
			fields := strings.Fields(v)
			pre := false
			for _, f := range fields {
				switch f {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						info["softdep-pre"] = append(info["softdep-pre"], f)
					}
				}
			}
		}
	}
	return info, nil
}
