package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{
		"512": 512 * MiB, "512M": 512 * MiB, "512MiB": 512 * MiB, "512mb": 512 * MiB,
		"2G": 2 * GiB, "2GiB": 2 * GiB, "1024K": MiB, "4096B": 4096, " 1G ": GiB,
	} {
		got, err := ParseSize("--memory", in)
		if err != nil || got != want {
			t.Errorf("%q: got %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"12XB", "", "-1G", "1.5G", "G", "99999999999999999999T"} {
		if _, err := ParseSize("--memory", in); err == nil || !strings.HasPrefix(err.Error(), "--memory: ") {
			t.Errorf("%q: got %v, want an error naming --memory", in, err)
		}
	}
}

func validFlags() RunFlags {
	return RunFlags{CPUs: 1, Memory: "512M", Kernel: "default", Image: "default", Cmd: []string{"true"}}
}

func TestParseRunNamesTheFlag(t *testing.T) {
	for want, mutate := range map[string]func(*RunFlags){
		"--cpus":         func(f *RunFlags) { f.CPUs = 0 },
		"--memory: ":     func(f *RunFlags) { f.Memory = "12XB" },
		"--memory: 1":    func(f *RunFlags) { f.Memory = "1M" },
		"--image":        func(f *RunFlags) { f.Image = "Bad Name" },
		"--kernel":       func(f *RunFlags) { f.Kernel = "/no/such/vmlinux" },
		"--env":          func(f *RunFlags) { f.Env = []string{"1A=b"} },
		"--workdir":      func(f *RunFlags) { f.WorkDir = "relative" },
		"command":        func(f *RunFlags) { f.Cmd = []string{""} },
		"--image: \"Bad": func(f *RunFlags) { f.Image = "Bad:Ref" },
	} {
		f := validFlags()
		mutate(&f)
		if _, err := ParseRun(f); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("want an error starting %q, got %v", want, err)
		}
	}
	if _, err := ParseRun(validFlags()); err != nil {
		t.Fatal(err)
	}
}

func TestParseAssetRef(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "vmlinux")
	os.WriteFile(file, []byte("x"), 0o644)
	if r, err := ParseAssetRef("--kernel", file); err != nil || r.Path != file {
		t.Fatalf("%+v %v", r, err)
	}
	if r, err := ParseAssetRef("--kernel", "default"); err != nil || r.Name != "default" {
		t.Fatalf("%+v %v", r, err)
	}
	if r, err := ParseAssetRef("--image", "localhost:5000/firegopher/base-image:v1"); err != nil || r.OCI == "" {
		t.Fatalf("%+v %v", r, err)
	}
	if r, err := ParseAssetRef("--image", "debian:bookworm"); err != nil || r.OCI != "debian:bookworm" {
		t.Fatalf("%+v %v", r, err)
	}
	if r, err := ParseAssetRef("--kernel", "deb:linux-image-6.1.0-56-cloud-amd64"); err != nil || r.Deb != "linux-image-6.1.0-56-cloud-amd64" {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := ParseAssetRef("--kernel", "deb:Bad Name"); err == nil {
		t.Fatal("bad package accepted")
	}
	if _, err := ParseAssetRef("--image", dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("directory accepted: %v", err)
	}
}

func TestParseRunFiles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "tool.sh")
	os.WriteFile(src, []byte("#!/bin/sh\n"), 0o755)
	key := filepath.Join(dir, "id.pub")
	os.WriteFile(key, []byte("ssh-ed25519 AAAA me"), 0o644)
	f := validFlags()
	f.Copy = []string{src + ":/usr/local/bin/tool", src + ":/etc/x:0600"}
	f.AuthorizedKeys = []string{key}
	r, err := ParseRun(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Files) != 4 || r.Files[0].Mode != 0o755 || r.Files[1].Mode != 0o600 || string(r.Files[3].Data) != "ssh-ed25519 AAAA me\n" {
		t.Fatalf("%+v", r.Files)
	}
	for _, bad := range []string{"nocolon", src + ":relative", src + ":/x:9z", "/no/such:/x"} {
		f := validFlags()
		f.Copy = []string{bad}
		if _, err := ParseRun(f); err == nil || !strings.HasPrefix(err.Error(), "--copy") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	f = validFlags()
	f.AuthorizedKeys = []string{src}
	if _, err := ParseRun(f); err == nil || !strings.Contains(err.Error(), "SSH public key") {
		t.Errorf("non-key accepted: %v", err)
	}
}
