package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/vmm/qemu"
)

// templates is the snapshot template cache beside the assets.
func (g *globalFlags) templates() *supervisor.Templates {
	return &supervisor.Templates{Dir: filepath.Join(g.cacheDir(), "templates"), Log: g.logger()}
}

// printTemplates adds the snapshot templates to the images table.
func printTemplates(w io.Writer, t *supervisor.Templates) error {
	list, err := t.List()
	if err != nil {
		return err
	}
	for _, tpl := range list {
		k := tpl.Key
		fmt.Fprintf(w, "template\t%s\t%s\t%.1f MiB\t%s ago\tcpus=%d memory=%dM kernel=%s initrd=%.12s %s\n",
			tpl.Name, "-", float64(tpl.Size)/(1<<20), time.Since(tpl.Created).Round(time.Second),
			k.CPUs, k.MemoryMiB, assets.Digest(k.Kernel).Short(), k.Initrd, k.Backend)
	}
	return nil
}

// gcTemplates removes every template when all, else those that can never be restored
// again: their kernel or initramfs is gone from the cache, or they were saved by another
// QEMU or device layout than this host's.
func gcTemplates(t *supervisor.Templates, store *assets.Store, all bool) ([]string, error) {
	current := ""
	if b, err := qemu.New(string(qemu.AccelTCG)); err == nil {
		current, _ = b.TemplateID()
	}
	return t.GC(func(tpl supervisor.Template) bool {
		if all {
			return false
		}
		k := tpl.Key
		usable := store.Has(assets.Digest(k.Kernel)) && store.Has(assets.Digest("sha256:"+k.Initrd))
		if strings.HasPrefix(k.Backend, "qemu-") && current != "" && k.Backend != current {
			usable = false
		}
		return usable
	})
}
