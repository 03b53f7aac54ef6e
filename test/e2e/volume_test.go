//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/spec"
)

// TestVolumes follows one volume through four VMs: the first writes it (and reads a host
// directory shipped read-only), the second holds it read-write while rm and a third VM are
// refused, the last reads the first's data read-only and cannot write.
func TestVolumes(t *testing.T) {
	name := "e2e-" + spec.NewID()
	if r := firegopher(t, "volume", "create", name, "--size", "64M"); r.code != 0 || strings.TrimSpace(string(r.stdout)) != name {
		t.Fatalf("volume create: %s", r)
	}
	t.Cleanup(func() { firegopher(t, "volume", "rm", name) })

	// A host directory, named as the user would: relative to the working directory.
	site := t.TempDir()
	if err := os.WriteFile(filepath.Join(site, "index.html"), []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cwd, _ := os.Getwd()
	rel, err := filepath.Rel(cwd, site)
	if err != nil || !strings.HasPrefix(rel, "..") {
		t.Fatalf("relative path to %s: %q %v", site, rel, err)
	}
	r := firegopher(t, "run", "-v", name+":/data", "-v", rel+":/srv:ro", "--", "sh", "-c",
		`cat /srv/index.html; touch /srv/x 2>/dev/null && echo srv-writable; echo persisted > /data/note && echo written`)
	if r.code != 0 || string(r.stdout) != "hello from the host\nwritten\n" {
		t.Fatalf("first VM: %s", r)
	}

	before := vmDirs(t)
	id := detached(t, "-v", name+":/data", "--", "sh", "-c", "cat /data/note; exec sleep 600")
	waitForOutput(t, id, "persisted")
	if r := firegopher(t, "volume", "rm", name); r.code == 0 || !strings.Contains(string(r.stderr), "in use: attached to running VM "+id+" (read-write)") {
		t.Errorf("volume rm while attached: %s", r)
	}
	var v struct{ Users []struct{ VM string } }
	if r := firegopher(t, "volume", "inspect", name); r.code != 0 || json.Unmarshal(r.stdout, &v) != nil || len(v.Users) != 1 || v.Users[0].VM != id {
		t.Errorf("volume inspect while attached: %s", r)
	}
	r = firegopher(t, "run", "-v", name+":/data", "--", "true")
	if r.code == 0 || !strings.Contains(string(r.stderr), `--volume: volume "`+name+`" is in use: attached to running VM `+id) {
		t.Errorf("a second VM asking for it read-write: %s", r)
	}
	for _, d := range vmDirs(t) {
		if d != id && !slices.Contains(before, d) {
			t.Errorf("the refused VM left its directory %s", d)
		}
	}
	if r := firegopher(t, "stop", id); r.code != 0 {
		t.Fatalf("stop: %s", r)
	}

	r = firegopher(t, "run", "-v", name+":/data:ro", "--", "sh", "-c",
		`cat /data/note; if touch /data/y 2>/dev/null; then echo writable; else echo read-only; fi; grep -c ' /data ext4 ro,' /proc/mounts`)
	if r.code != 0 || string(r.stdout) != "persisted\nread-only\n1\n" {
		t.Fatalf("last VM, read-only: %s", r)
	}
	firegopher(t, "rm", id)
	if r := firegopher(t, "volume", "rm", name); r.code != 0 {
		t.Fatalf("volume rm once no VM has it: %s", r)
	}
	if r := firegopher(t, "volume", "inspect", name); r.code == 0 {
		t.Errorf("inspect after rm: %s", r)
	}
}

// Bad -v values are refused before anything is made, naming the flag.
func TestVolumeBadInput(t *testing.T) {
	before := vmDirs(t)
	for arg, want := range map[string]string{
		"e2e-missing-" + spec.NewID() + ":/data": "--volume: no volume named",
		"data:relative":                          `--volume: guest path "relative" is not absolute`,
		"Data:/data":                             `--volume: "Data" is neither a volume name`,
		"./no-such-dir:/srv:ro":                  "--volume: ./no-such-dir: no such directory",
		".:/srv:rw":                              "a host directory is shipped as a read-only copy",
	} {
		r := firegopher(t, "run", "-v", arg, "--", "true")
		if r.code == 0 || !strings.Contains(string(r.stderr), want) {
			t.Errorf("-v %s: %s\nwant %q", arg, r, want)
		}
	}
	if after := vmDirs(t); !slices.Equal(before, after) {
		t.Errorf("refused runs left VM directories: before %v, after %v", before, after)
	}
}
