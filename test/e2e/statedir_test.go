//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mountTmpfs mounts a small tmpfs (a private test directory, not a host path) and returns it.
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

func runWithStateDir(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return runFiregopher(t, nil, append([]string{"--state-dir", dir}, args...)...)
}

func TestReadOnlyStateDirIsAClearError(t *testing.T) {
	dir := mountTmpfs(t, "ro,size=1m")
	r := runWithStateDir(t, dir, "run", "--", "true")
	lines := strings.Split(strings.TrimSpace(string(r.stderr)), "\n")
	if r.code != 125 || len(lines) != 1 || !strings.Contains(lines[0], "read-only file system") {
		t.Fatalf("want exit 125 and one line saying the state dir is read-only:\n%s", r)
	}
}

func TestFullDiskIsAClearErrorWithoutLeftovers(t *testing.T) {
	// Room for the state database but not for the kernel (53 MiB) the run must import.
	dir := mountTmpfs(t, "size=8m")
	vmlinux := defaultVmlinux(t)
	r := runWithStateDir(t, dir, "run", "--kernel", vmlinux, "--image", defaultRootfs(t), "--", "true")
	if r.code != 125 || !strings.Contains(string(r.stderr), "no space left on device") {
		t.Fatalf("want exit 125 naming the full disk:\n%s", r)
	}
	for _, sub := range []string{"cache/tmp", "vms"} {
		entries, _ := os.ReadDir(filepath.Join(dir, sub))
		if len(entries) != 0 {
			t.Errorf("%s holds leftovers after the failure: %d entries", sub, len(entries))
		}
	}
	blobs, _ := os.ReadDir(filepath.Join(dir, "cache", "blobs", "sha256"))
	for _, b := range blobs {
		if got := fileDigest(t, filepath.Join(dir, "cache", "blobs", "sha256", b.Name())); got != "sha256:"+b.Name() {
			t.Errorf("a half-written blob is visible: %s", b.Name())
		}
	}
}

// defaultVmlinux follows the cache's refs to the default kernel's ELF.
func defaultVmlinux(t *testing.T) string {
	t.Helper()
	cache := filepath.Join(stateDir, "cache")
	b, err := os.ReadFile(blobPath(cache, readRef(t, cache, "kernel/default")))
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ Vmlinux string }
	if err := jsonUnmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	return blobPath(cache, k.Vmlinux)
}
