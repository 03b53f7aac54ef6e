package initrd

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cavaliergopher/cpio"
)

func TestLayersConcatenateIntoOneTree(t *testing.T) {
	var buf bytes.Buffer
	base := Layer{{Path: "/init", Mode: 0o755, Data: []byte("#!/bin/sh\n")}, {Path: "/etc/firegopher/modules.order", Mode: 0o644, Data: []byte("a.ko\n")}}
	vm := Layer{{Path: "/etc/firegopher/config.json", Mode: 0o600, Data: []byte(`{"version":1}`)}}
	if err := base.Write(&buf); err != nil {
		t.Fatal(err)
	}
	if err := vm.Write(&buf); err != nil {
		t.Fatal(err)
	}
	// Read the archives back one after the other, the way the kernel unpacks them.
	dir := t.TempDir()
	for archive := 0; buf.Len() > 0; archive++ {
		r := cpio.NewReader(&buf)
		for {
			hdr, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("archive %d: %v", archive, err)
			}
			p := filepath.Join(dir, hdr.Name)
			if hdr.Mode.IsDir() {
				os.MkdirAll(p, 0o755)
				continue
			}
			data, _ := io.ReadAll(r)
			if err := os.WriteFile(p, data, os.FileMode(hdr.Mode.Perm())); err != nil {
				t.Fatal(err)
			}
		}
		// Archives are padded to 4 bytes; strip the padding before the next one.
		for buf.Len() > 0 && buf.Bytes()[0] == 0 {
			buf.ReadByte()
		}
	}
	for p, want := range map[string]string{"init": "#!/bin/sh\n", "etc/firegopher/config.json": `{"version":1}`, "etc/firegopher/modules.order": "a.ko\n"} {
		got, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q %v", p, got, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "init")); fi == nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("init mode: %v", fi)
	}
}

func TestLayerIsReproducible(t *testing.T) {
	l := Layer{{Path: "/a/b", Mode: 0o644, Data: []byte("x")}}
	var one, two bytes.Buffer
	l.Write(&one)
	l.Write(&two)
	if !bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Fatal("same layer, different bytes: digests would not be stable")
	}
}

func TestLayerRejectsEscapingPaths(t *testing.T) {
	for _, p := range []string{"/../etc/passwd", "/", "/a/../../b"} {
		if err := (Layer{{Path: p, Data: nil}}).Write(io.Discard); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}
