package image

import (
	"strings"
	"testing"
)

func TestRequireToolsPresent(t *testing.T) {
	// These are installed by scripts/host-packages.sh; if not, the error says what to install.
	if err := RequireTools(); err != nil {
		t.Fatal(err)
	}
	if err := RequireTools("mkfs.ext4", "debugfs"); err != nil {
		t.Fatal(err)
	}
}

func TestRequireToolsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	orig := sbinDirs
	t.Cleanup(func() { sbinDirs = orig })
	sbinDirs = nil

	err := RequireTools()
	if err == nil {
		t.Fatal("no error with an empty PATH")
	}
	for _, want := range []string{
		"mmdebstrap (Debian package mmdebstrap)",
		"mkfs.ext4 (Debian package e2fsprogs)",
		"apt-get install mmdebstrap e2fsprogs",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}

	// One package named once, however many of its tools are missing.
	err = RequireTools("mkfs.ext4", "debugfs")
	if err == nil || !strings.HasSuffix(err.Error(), "apt-get install e2fsprogs") {
		t.Errorf("err = %v, want it to end with 'apt-get install e2fsprogs'", err)
	}

	err = RequireTools("no-such-tool")
	if err == nil || !strings.Contains(err.Error(), "no-such-tool") || strings.Contains(err.Error(), "apt-get") {
		t.Errorf("err = %v, want it to name no-such-tool and no package", err)
	}
}

// A root PATH without the sbin directories still finds mkfs.ext4 there.
func TestLookToolSbinFallback(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	p, err := lookTool("mkfs.ext4")
	if err != nil {
		t.Fatal(RequireTools("mkfs.ext4"))
	}
	if !strings.HasSuffix(p, "/sbin/mkfs.ext4") {
		t.Errorf("found %s", p)
	}
}
