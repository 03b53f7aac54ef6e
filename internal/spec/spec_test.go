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
		"--cpus":      func(f *RunFlags) { f.CPUs = 0 },
		"--memory: ":  func(f *RunFlags) { f.Memory = "12XB" },
		"--memory: 1": func(f *RunFlags) { f.Memory = "1M" },
		"--image":     func(f *RunFlags) { f.Image = "Bad Name" },
		"--kernel":    func(f *RunFlags) { f.Kernel = "/no/such/vmlinux" },
		"--env":       func(f *RunFlags) { f.Env = []string{"1A=b"} },
		"--workdir":   func(f *RunFlags) { f.WorkDir = "relative" },
		"no command":  func(f *RunFlags) { f.Cmd = nil },
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
	if _, err := ParseAssetRef("--image", dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("directory accepted: %v", err)
	}
}
