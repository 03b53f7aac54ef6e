package snapdisk

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestKey(t *testing.T) {
	dir := t.TempDir()
	empty, full := filepath.Join(dir, "empty"), filepath.Join(dir, "full")
	os.Mkdir(empty, 0o755)
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "f"), nil, 0o644)
	overlay := func(upper string) []Mount {
		return []Mount{{Type: "overlay", Source: "overlay", Options: []string{"workdir=/w", "upperdir=" + upper, "lowerdir=/l2:/l1"}}}
	}
	k := Key(overlay(empty))
	if k == "" {
		t.Fatal("an overlay with an empty upper directory has no key")
	}
	if Key(overlay(empty)) != k {
		t.Fatal("the key is not stable")
	}
	other := []Mount{{Type: "overlay", Options: []string{"upperdir=" + empty, "lowerdir=/l3:/l1"}}}
	if Key(other) == k {
		t.Fatal("other layers have the same key")
	}
	for name, ms := range map[string][]Mount{
		"upper with content": overlay(full),
		"writable bind":      {{Type: "bind", Source: "/s", Options: []string{"rbind", "rw"}}},
		"two mounts":         append(overlay(empty), overlay(empty)...),
		"none":               nil,
	} {
		if Key(ms) != "" {
			t.Errorf("%s: has a cache key", name)
		}
	}
	if Key([]Mount{{Type: "bind", Source: "/s", Options: []string{"rbind", "ro"}}}) == "" {
		t.Error("a read-only bind mount has no key")
	}
}

// debugfsCat reads a file of an ext4 image without mounting it.
func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func TestBuildOverlayIsCachedAndReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting an overlay needs root")
	}
	dir := t.TempDir()
	l1, l2, upper, work := filepath.Join(dir, "l1"), filepath.Join(dir, "l2"), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{l1, l2, upper, work} {
		os.Mkdir(d, 0o755)
	}
	os.WriteFile(filepath.Join(l1, "base"), []byte("from l1\n"), 0o644)
	os.WriteFile(filepath.Join(l2, "top"), []byte("from l2\n"), 0o644)
	os.WriteFile(filepath.Join(l1, "shadowed"), []byte("old\n"), 0o644)
	os.WriteFile(filepath.Join(l2, "shadowed"), []byte("new\n"), 0o644)
	mounts := []Mount{{Type: "overlay", Source: "overlay", Options: []string{"index=off", "workdir=" + work, "upperdir=" + upper, "lowerdir=" + l2 + ":" + l1}}}
	c := &Cache{Dir: filepath.Join(dir, "cache")}
	d, err := c.Build(context.Background(), mounts, "")
	if err != nil {
		t.Fatal(err)
	}
	if !d.Cached {
		t.Fatal("not cached")
	}
	for path, want := range map[string]string{"/base": "from l1\n", "/top": "from l2\n", "/shadowed": "new\n"} {
		if got := debugfsCat(t, d.Path, path); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
	// The snapshot was not written to, and nothing is left mounted.
	for _, d := range []string{upper, work} {
		if !emptyDir(d) {
			t.Errorf("%s was written to", d)
		}
	}
	mounts2, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts2), dir) {
		t.Fatalf("a mount under %s is left", dir)
	}
	// A second container of the same image gets the cached disk: a change to a layer (which
	// containerd never makes) does not show, so nothing was rebuilt.
	os.WriteFile(filepath.Join(l1, "later"), []byte("x"), 0o644)
	d2, err := c.Build(context.Background(), mounts, "")
	if err != nil {
		t.Fatal(err)
	}
	if d2.Path != d.Path {
		t.Fatalf("second build: %s, want the cached %s", d2.Path, d.Path)
	}
	if out, _ := exec.Command("debugfs", "-R", "stat /later", d.Path).CombinedOutput(); !strings.Contains(string(out), "not found") {
		t.Fatalf("the disk was rebuilt: %s", out)
	}
	entries, _ := os.ReadDir(c.Dir)
	if len(entries) != 1 {
		t.Fatalf("cache dir holds %d entries, want the one image", len(entries))
	}
}

func TestBuildPrivateDiskIsReleased(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("box\n"), 0o644)
	c := &Cache{Dir: filepath.Join(dir, "cache")}
	d, err := c.Build(context.Background(), nil, root)
	if err != nil {
		t.Fatal(err)
	}
	if d.Cached {
		t.Fatal("a bundle's own rootfs directory was cached")
	}
	if got := debugfsCat(t, d.Path, "/etc/hostname"); got != "box\n" {
		t.Fatalf("/etc/hostname: %q", got)
	}
	d.Release()
	if entries, _ := os.ReadDir(c.Dir); len(entries) != 0 {
		t.Fatalf("after release the cache dir holds %v", entries)
	}
}
