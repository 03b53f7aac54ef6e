//go:build linux

package guest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

func TestApplyFiles(t *testing.T) {
	root := t.TempDir()
	// An image that planted a symlink where a file goes must not get written through it.
	outside := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(outside, []byte("keep"), 0o644)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.Symlink(outside, filepath.Join(root, "etc/motd"))
	err := ApplyFiles(root, []vmconfig.File{
		{Path: "/home/app/.ssh", Dir: true, Mode: 0o700, UID: 1000, GID: 1000},
		{Path: "/home/app/.ssh/authorized_keys", Mode: 0o600, UID: 1000, GID: 1000, Data: []byte("ssh-ed25519 AAAA test\n")},
		{Path: "/usr/local/bin/tool", Mode: 0o4755, Data: []byte("#!/bin/sh\n")},
		{Path: "/etc/motd", Mode: 0o644, Data: []byte("hello\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(p string, mode os.FileMode, uid uint32) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&(os.ModePerm|os.ModeSetuid) != mode || fi.Sys().(*syscall.Stat_t).Uid != uid {
			t.Errorf("%s: mode %v uid %d; want %v %d", p, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, mode, uid)
		}
	}
	check("home/app/.ssh", 0o700, 1000)
	check("home/app/.ssh/authorized_keys", 0o600, 1000)
	check("usr/local/bin/tool", 0o755|os.ModeSetuid, 0)
	if b, _ := os.ReadFile(outside); string(b) != "keep" {
		t.Fatal("wrote through a symlink out of the root")
	}
}
