package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	longDir  = strings.Repeat("d", 60)
	longFile = strings.Repeat("f", 80)
	dataTime = time.Date(2021, 5, 5, 5, 5, 5, 0, time.UTC)
	origTime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
)

// Two layers that exercise what a flattener must get right.
func testLayers() (lower, upper []tentry) {
	lower = []tentry{
		dirE("etc", 0o755),
		fileE("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644),
		fileE("etc/deleteme", "x", 0o644),
		dirE("opq", 0o755),
		fileE("opq/old", "old", 0o644),
		dirE("opq/sub", 0o755),
		fileE("opq/sub/old2", "old2", 0o644),
		dirE("keepdir", 0o750),
		fileE("keepdir/a", "a", 0o600),
		dirE("bin", 0o755),
		fileE("bin/su", "su", 0o4755),
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/sgid", Mode: 0o2755, Gid: 42}, body: "g"},
		dirE("tmp", 0o1777),
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755, ModTime: dataTime}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "data/orig", Mode: 0o640, Uid: 1000, Gid: 1000, ModTime: origTime}, body: "hello"},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "data/link", Linkname: "data/orig"}},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "data/sym", Linkname: "orig"}},
		dirE("dev", 0o755),
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null2", Mode: 0o666, Devmajor: 1, Devminor: 3}},
		// No entry for run/: layers need not list parent directories.
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "run/fifo", Mode: 0o600}},
		fileE(longDir+"/"+longFile, "long", 0o644),
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "xattr/file", Mode: 0o644, PAXRecords: map[string]string{"SCHILY.xattr.user.test": "value"}}, body: "x"},
		dirE("replaced", 0o755),
		fileE("replaced/child", "c", 0o644),
	}
	upper = []tentry{
		// Before the opaque marker: entries of the same layer survive it whatever the order.
		fileE("opq/new", "new", 0o644),
		dirE("opq", 0o755),
		fileE("opq/.wh..wh..opq", "", 0o644),
		fileE("etc/.wh.deleteme", "", 0o644),
		fileE("etc/.wh.never-existed", "", 0o644),
		fileE("etc/passwd", "root:x:0:0::/root:/bin/bash\n", 0o644),
		fileE("replaced", "now a file", 0o644),
	}
	return lower, upper
}

// expectedTree is testLayers flattened.
func expectedTree() map[string]string {
	return map[string]string{
		"etc":                    "dir 0755 0:0",
		"etc/passwd":             `file 0644 0:0 n1 "root:x:0:0::/root:/bin/bash\n"`,
		"opq":                    "dir 0755 0:0",
		"opq/new":                `file 0644 0:0 n1 "new"`,
		"keepdir":                "dir 0750 0:0",
		"keepdir/a":              `file 0600 0:0 n1 "a"`,
		"bin":                    "dir 0755 0:0",
		"bin/su":                 `file 4755 0:0 n1 "su"`,
		"bin/sgid":               `file 2755 0:42 n1 "g"`,
		"tmp":                    "dir 1777 0:0",
		"data":                   "dir 0755 0:0",
		"data/orig":              `file 0640 1000:1000 n2 "hello"`,
		"data/link":              `file 0640 1000:1000 n2 "hello"`,
		"data/sym":               "symlink 0:0 -> orig",
		"dev":                    "dir 0755 0:0",
		"dev/null2":              "char 0666 0:0 1,3",
		"run":                    "dir 0755 0:0",
		"run/fifo":               "fifo 0600 0:0",
		longDir:                  "dir 0755 0:0",
		longDir + "/" + longFile: `file 0644 0:0 n1 "long"`,
		"xattr":                  "dir 0755 0:0",
		"xattr/file":             `file 0644 0:0 n1 "x" user.test=value`,
		"replaced":               `file 0644 0:0 n1 "now a file"`,
	}
}

func flattenInto(t *testing.T, dir string, layers ...[]tentry) {
	t.Helper()
	fl := newFlattener(dir, nil)
	for _, l := range layers {
		if err := fl.apply(context.Background(), bytes.NewReader(tarBytes(t, l))); err != nil {
			t.Fatal(err)
		}
	}
	if err := fl.finish(); err != nil {
		t.Fatal(err)
	}
}

func TestFlatten(t *testing.T) {
	dir := t.TempDir()
	lower, upper := testLayers()
	flattenInto(t, dir, lower, upper)
	diffTrees(t, describe(t, dir), expectedTree())

	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "data/orig"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(dir, "data/link"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino {
		t.Error("data/link is a copy, want a hard link to data/orig")
	}
	for p, want := range map[string]time.Time{"data": dataTime, "data/orig": origTime} {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(want) {
			t.Errorf("%s mtime %v, want %v", p, fi.ModTime(), want)
		}
	}
}

// A later layer that replaces one name of a hard-linked pair leaves the other name's content
// alone (overlayfs copies up; it never writes through).
func TestFlattenReplaceHardLinked(t *testing.T) {
	dir := t.TempDir()
	flattenInto(t, dir,
		[]tentry{fileE("a", "old", 0o644), {hdr: tar.Header{Typeflag: tar.TypeLink, Name: "b", Linkname: "a"}}},
		[]tentry{fileE("a", "new", 0o644)})
	diffTrees(t, describe(t, dir), map[string]string{
		"a": `file 0644 0:0 n1 "new"`,
		"b": `file 0644 0:0 n1 "old"`,
	})
}

// Hostile names and symlinks cannot write outside the tree.
func TestFlattenStaysInTree(t *testing.T) {
	outer := t.TempDir()
	dir := filepath.Join(outer, "tree")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	flattenInto(t, dir, []tentry{
		fileE("../escape1", "x", 0o644),
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "up", Linkname: "../.."}},
		fileE("up/escape2", "x", 0o644),
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "abs", Linkname: "/"}},
		fileE("abs/escape3", "x", 0o644),
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "loop", Linkname: "loop"}},
	})
	entries, _ := os.ReadDir(outer)
	if len(entries) != 1 {
		t.Errorf("entries outside the tree: %v", entries)
	}
	for _, p := range []string{"escape1", "escape2", "escape3"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s should have landed inside the tree: %v", p, err)
		}
	}
	// A write through a symlink loop fails cleanly.
	fl := newFlattener(dir, nil)
	err := fl.apply(context.Background(), bytes.NewReader(tarBytes(t, []tentry{fileE("loop/x", "x", 0o644)})))
	if err == nil {
		t.Error("write through a symlink loop: no error")
	}
}
