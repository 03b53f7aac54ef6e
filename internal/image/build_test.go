package image

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testLogger collects Debug and up, for checking what Build streamed.
func testLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("%s not cleaned up: %v", dir, names)
	}
}

func assertNoFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists after a failed build (%v)", path, err)
	}
}

func assertNoMountsUnder(t *testing.T, dir string) {
	t.Helper()
	m, err := mountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) > 0 {
		t.Fatalf("mounts left under %s: %v", dir, m)
	}
}

func TestBuildRejectsBadRecipe(t *testing.T) {
	work, out := t.TempDir(), filepath.Join(t.TempDir(), "rootfs.ext4")
	r := DefaultRecipe()
	r.Packages = append(r.Packages, "Not_A_Package")
	err := Build(context.Background(), r, work, out, nil)
	if err == nil || !strings.Contains(err.Error(), "recipe packages") {
		t.Fatalf("err = %v, want a packages error", err)
	}
	assertEmptyDir(t, work)
	assertNoFile(t, out)
}

func TestBuildOutExists(t *testing.T) {
	needTools(t, "mmdebstrap", "mkfs.ext4")
	work, out := t.TempDir(), filepath.Join(t.TempDir(), "rootfs.ext4")
	must(t, os.WriteFile(out, []byte("precious"), 0o644))
	err := Build(context.Background(), DefaultRecipe(), work, out, nil)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("err = %v, want 'already exists'", err)
	}
	assertEmptyDir(t, work)
	if b, _ := os.ReadFile(out); string(b) != "precious" {
		t.Fatalf("existing out changed to %q", b)
	}
}

// A real mmdebstrap run that fails fast: a file:// mirror with no archive in it.
func TestBuildMmdebstrapFails(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mmdebstrap --mode=root needs root")
	}
	needTools(t, "mmdebstrap", "mkfs.ext4")
	work, out := t.TempDir(), filepath.Join(t.TempDir(), "rootfs.ext4")
	r := Recipe{Suite: "bookworm", Mirror: "file://" + t.TempDir()}
	log, logged := testLogger()
	err := Build(context.Background(), r, work, out, log)
	if err == nil {
		t.Fatal("Build from an empty mirror succeeded")
	}
	// The error carries mmdebstrap's last lines: apt's reason, not just an exit status.
	for _, want := range []string{"mmdebstrap bookworm", "exit status", "Release"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if !strings.Contains(logged.String(), "level=DEBUG msg=mmdebstrap line=") {
		t.Errorf("mmdebstrap's output was not logged at Debug:\n%s", logged)
	}
	assertNoMountsUnder(t, work)
	assertEmptyDir(t, work)
	assertNoFile(t, out)
}

func TestEmptyAptLists(t *testing.T) {
	tree := t.TempDir()
	lists := filepath.Join(tree, "var/lib/apt/lists")
	write(t, filepath.Join(lists, "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"), []byte("Package: x\n"), 0o644)
	write(t, filepath.Join(lists, "deb.debian.org_debian_dists_bookworm_InRelease"), []byte("x"), 0o644)
	write(t, filepath.Join(lists, "lock"), nil, 0o640)
	write(t, filepath.Join(lists, "auxfiles/x"), nil, 0o644)
	write(t, filepath.Join(lists, "partial/half"), []byte("x"), 0o644)
	must(t, os.Chmod(filepath.Join(lists, "partial"), 0o700))
	must(t, emptyAptLists(tree))
	entries, err := os.ReadDir(lists)
	must(t, err)
	if len(entries) != 1 || entries[0].Name() != "partial" {
		t.Fatalf("lists/ holds %v, want just partial/", entries)
	}
	assertEmptyDir(t, filepath.Join(lists, "partial"))
	if fi, _ := os.Stat(filepath.Join(lists, "partial")); fi.Mode().Perm() != 0o700 {
		t.Errorf("partial/ mode changed to %v", fi.Mode())
	}

	// No lists at all: nothing to do.
	must(t, emptyAptLists(t.TempDir()))
}

// A symlink inside the tree must not lead the cleanup out of it.
func TestEmptyAptListsSymlink(t *testing.T) {
	outside := t.TempDir()
	write(t, filepath.Join(outside, "precious"), []byte("x"), 0o644)
	tree := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(tree, "var/lib/apt"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(tree, "var/lib/apt/lists")))
	if err := emptyAptLists(tree); err == nil {
		t.Fatal("no error for a symlinked lists directory")
	}
	if _, err := os.Stat(filepath.Join(outside, "precious")); err != nil {
		t.Fatalf("file outside the tree removed: %v", err)
	}
}

// What a killed mmdebstrap leaves behind: mounts inside the tree. Removing the tree must
// unmount them, not delete through them.
func TestRemoveTreeUnmounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	outside := t.TempDir()
	write(t, filepath.Join(outside, "precious"), []byte("x"), 0o644)
	tmp := filepath.Join(t.TempDir(), "rootfs 1") // a space: mountinfo escapes it
	tree := filepath.Join(tmp, "tree")
	write(t, filepath.Join(tree, "etc/hostname"), []byte("x"), 0o644)
	for _, d := range []string{"sys", "proc", "dev/shm"} {
		must(t, os.MkdirAll(filepath.Join(tree, d), 0o755))
	}
	t.Cleanup(func() {
		// Only if the test failed halfway; detach whatever is still there.
		if m, _ := mountsUnder(tmp); len(m) > 0 {
			for _, p := range m {
				unix.Unmount(p, unix.MNT_DETACH)
			}
		}
	})
	must(t, unix.Mount(outside, filepath.Join(tree, "sys"), "", unix.MS_BIND, ""))
	must(t, unix.Mount("tmpfs", filepath.Join(tree, "proc"), "tmpfs", 0, "size=1m"))
	must(t, unix.Mount("tmpfs", filepath.Join(tree, "proc"), "tmpfs", 0, "size=1m")) // stacked
	must(t, unix.Mount("tmpfs", filepath.Join(tree, "dev/shm"), "tmpfs", 0, "size=1m"))
	if m, _ := mountsUnder(tmp); len(m) != 4 {
		t.Fatalf("mountsUnder found %v, want 4 mounts", m)
	}

	log, logged := testLogger()
	if err := removeTree(tmp, log); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logged.String(), "level=WARN"); n != 4 {
		t.Errorf("want 4 unmounts logged:\n%s", logged)
	}
	assertNoMountsUnder(t, filepath.Dir(tmp))
	assertNoFile(t, tmp)
	if _, err := os.Stat(filepath.Join(outside, "precious")); err != nil {
		t.Fatalf("removeTree deleted through a bind mount: %v", err)
	}
}

// The second line of defence: never cross onto another device, even if a mount was missed.
func TestRemoveSameDevStopsAtMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	tmp := t.TempDir()
	write(t, filepath.Join(tmp, "a/file"), []byte("x"), 0o644)
	mnt := filepath.Join(tmp, "b/mnt")
	must(t, os.MkdirAll(mnt, 0o755))
	must(t, unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	write(t, filepath.Join(mnt, "precious"), []byte("x"), 0o644)

	var st unix.Stat_t
	must(t, unix.Lstat(tmp, &st))
	err := removeSameDev(tmp, st.Dev)
	if err == nil || !strings.Contains(err.Error(), "another filesystem") {
		t.Fatalf("err = %v, want 'another filesystem'", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "precious")); err != nil {
		t.Fatalf("file on the other filesystem removed: %v", err)
	}
	assertNoFile(t, filepath.Join(tmp, "a"))
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":             "/plain",
		`/a\040b`:            "/a b",
		`/tab\011nl\012`:     "/tab\tnl\n",
		`/back\134slash`:     `/back\slash`,
		`/not\09octal`:       `/not\09octal`,
		`/short\04`:          `/short\04`,
		`/end\`:              `/end\`,
		`/two\040\040spaces`: "/two  spaces",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLineLog(t *testing.T) {
	log, logged := testLogger()
	l := &lineLog{log: log, keep: 3}
	for _, chunk := range []string{"I: one\nI: tw", "o\r\n\n", "I: three\nI: four\nE: fi", "ve"} {
		if n, err := l.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	l.flush()
	if got, want := l.tail(), "  I: three\n  I: four\n  E: five"; got != want {
		t.Errorf("tail = %q, want %q", got, want)
	}
	for _, want := range []string{`line="I: one"`, `line="I: two"`, `line="E: five"`} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logged)
		}
	}
	if strings.Count(logged.String(), "msg=mmdebstrap") != 5 {
		t.Errorf("want 5 logged lines (blank ones dropped):\n%s", logged)
	}
}
