package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/supervisor"
)

// assets gc keeps a template whose kernel and initrd are cached, and removes one whose
// kernel is gone; --templates removes every one.
func TestGCTemplates(t *testing.T) {
	store, err := assets.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	kernel, _ := store.PutBytes([]byte("kernel manifest"))
	initrd, _ := store.PutBytes([]byte("initrd"))
	tpl := &supervisor.Templates{Dir: filepath.Join(store.Root(), "templates"), Log: (&globalFlags{}).logger()}
	usable := supervisor.TemplateKey{Backend: "test-backend 1", Kernel: string(kernel), Initrd: initrd.Hex(), CPUs: 1, MemoryMiB: 512}
	orphan := usable
	orphan.Kernel = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	for _, k := range []supervisor.TemplateKey{usable, orphan} {
		if _, _, err := tpl.Ensure(context.Background(), k, func(_ context.Context, dir string) error {
			return os.WriteFile(filepath.Join(dir, "state"), []byte("s"), 0o644)
		}); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := gcTemplates(tpl, store, false)
	if err != nil || !slices.Equal(removed, []string{tpl.Path(orphan)}) {
		t.Fatalf("gc removed %v (%v), want only the template whose kernel is gone", removed, err)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		// A template of another QEMU build than this host's is never restored again.
		old := usable
		old.Backend = "qemu-tcg QEMU emulator version 0.1 q35"
		tpl.Ensure(context.Background(), old, func(_ context.Context, dir string) error { return nil })
		if removed, _ := gcTemplates(tpl, store, false); !slices.Equal(removed, []string{tpl.Path(old)}) {
			t.Fatalf("gc removed %v, want the old QEMU's template", removed)
		}
	}
	if removed, _ := gcTemplates(tpl, store, true); !slices.Equal(removed, []string{tpl.Path(usable)}) {
		t.Fatalf("gc --templates removed %v, want the last one", removed)
	}
}
