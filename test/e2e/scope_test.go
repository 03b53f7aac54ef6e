//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGCIsScopedToItsStateDir: gc of one state dir never touches another's VMs. A state dir
// with no VMs at all and a second state dir with a VM of its own both gc while a VM of the
// main state dir runs; that VM keeps running, its record intact, and so does the second's.
func TestGCIsScopedToItsStateDir(t *testing.T) {
	other := t.TempDir()
	// Share the main cache so the second state dir needs no prepare of its own.
	if err := os.Symlink(filepath.Join(stateDir, "cache"), filepath.Join(other, "cache")); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	main := detached(t, "--name", "scope-main", "--", "sh", "-c", "echo ready; exec sleep 300")
	waitForOutput(t, main, "ready")
	r := firegopher(t, "--state-dir", other, "run", "-d", "--", "sh", "-c", "exec sleep 300")
	second := strings.TrimSpace(string(r.stdout))
	if r.code != 0 || len(second) != 12 {
		t.Fatalf("run -d in the second state dir: %s", r)
	}
	t.Cleanup(func() { firegopher(t, "--state-dir", other, "rm", "-f", second) })

	for _, dir := range []string{empty, other} {
		if r := firegopher(t, "--state-dir", dir, "gc"); r.code != 0 || strings.Contains(string(r.stdout), main) {
			t.Fatalf("gc of %s mentions the main state dir's VM: %s", dir, r)
		}
	}
	if r := firegopher(t, "gc"); r.code != 0 || strings.Contains(string(r.stdout), second) {
		t.Fatalf("gc of the main state dir mentions the second's VM: %s", r)
	}
	if r := firegopher(t, "exec", main, "--", "echo", "alive"); r.code != 0 || string(r.stdout) != "alive\n" {
		t.Fatalf("the main VM did not survive another state dir's gc: %s", r)
	}
	if r := firegopher(t, "--state-dir", other, "exec", second, "--", "echo", "alive"); r.code != 0 || string(r.stdout) != "alive\n" {
		t.Fatalf("the second VM did not survive the main state dir's gc: %s", r)
	}
	if r := firegopher(t, "ps"); !strings.Contains(string(r.stdout), "scope-main") || !strings.Contains(string(r.stdout), "running") {
		t.Fatalf("ps after the other gc:\n%s", r)
	}
}
