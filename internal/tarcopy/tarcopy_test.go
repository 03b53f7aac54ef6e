package tarcopy

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRoundTripKeepsModesOwnersSymlinks(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(src, "sub", "deep"), 0o750)
	os.WriteFile(filepath.Join(src, "a.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "secret"), []byte("s"), 0o600)
	os.Symlink("../a.sh", filepath.Join(src, "sub", "link"))
	os.Chmod(filepath.Join(src, "sub"), 0o750)
	if os.Geteuid() == 0 {
		os.Lchown(filepath.Join(src, "sub", "secret"), 1234, 5678)
	}
	var buf bytes.Buffer
	if err := Write(&buf, src); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := Extract(&buf, dst); err != nil {
		t.Fatal(err)
	}
	check := func(rel string, mode fs.FileMode) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(dst, "tree", rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), mode)
		}
	}
	check("a.sh", 0o755)
	check("sub", fs.ModeDir|0o750)
	check("sub/secret", 0o600)
	check("sub/link", fs.ModeSymlink|0o777)
	if l, _ := os.Readlink(filepath.Join(dst, "tree", "sub", "link")); l != "../a.sh" {
		t.Errorf("symlink target %q", l)
	}
	if os.Geteuid() == 0 {
		fi, _ := os.Lstat(filepath.Join(dst, "tree", "sub", "secret"))
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("owner %d:%d, want 1234:5678", st.Uid, st.Gid)
		}
	}
}

func TestExtractRefusesToLeaveTheDestination(t *testing.T) {
	for _, entries := range [][]tar.Header{
		{{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		{{Name: "/etc/evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		{{Name: "out", Typeflag: tar.TypeSymlink, Linkname: "/tmp"}, {Name: "out/evil", Typeflag: tar.TypeReg, Mode: 0o644}},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			tw.WriteHeader(&h)
		}
		tw.Close()
		err := Extract(&buf, t.TempDir())
		if err == nil || !(strings.Contains(err.Error(), "leaves") || strings.Contains(err.Error(), "symlink")) {
			t.Errorf("%v: err %v", entries, err)
		}
	}
}
