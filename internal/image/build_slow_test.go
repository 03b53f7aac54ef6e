//go:build slow

// Real bootstraps from deb.debian.org: about a minute, network and root. Run with
// go test -tags slow ./internal/image/

package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func slowPrereqs(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mmdebstrap --mode=root needs root")
	}
	needTools(t, "mmdebstrap", "mkfs.ext4", "debugfs")
}

func TestBuildRealBootstrap(t *testing.T) {
	slowPrereqs(t)
	work, out := t.TempDir(), filepath.Join(t.TempDir(), "rootfs.ext4")
	r := Recipe{Suite: "bookworm", Mirror: "http://deb.debian.org/debian"} // the apt variant alone
	log, logged := testLogger()
	start := time.Now()
	if err := Build(context.Background(), r, work, out, log); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	var st unix.Stat_t
	must(t, unix.Stat(out, &st))
	t.Logf("Build took %s; image %d MiB, %d MiB allocated", took.Round(time.Second), st.Size/mib, st.Blocks*512/mib)

	if v := string(catImage(t, out, "/etc/debian_version")); !strings.HasPrefix(v, "12.") {
		t.Errorf("/etc/debian_version = %q, want 12.x", v)
	}
	if in := statImage(t, out, "/usr/bin/apt"); in.typ != "regular" || in.uid != 0 {
		t.Errorf("/usr/bin/apt: %+v", in)
	}
	if in := statImage(t, out, "/"); in.mode != "0755" || in.uid != 0 || in.gid != 0 {
		t.Errorf("root: %+v, want 0755 0:0", in)
	}
	if in := statImage(t, out, "/usr/bin/su"); in.mode != "04755" {
		t.Errorf("/usr/bin/su: %+v, want setuid 04755", in)
	}
	// Only ".", ".." and "partial" may remain in the lists. ls -p lines: /ino/mode/uid/gid/name/size/
	var left []string
	for _, line := range strings.Fields(debugfs(t, out, "ls -p /var/lib/apt/lists")) {
		f := strings.Split(line, "/")
		if len(f) < 6 {
			t.Fatalf("unexpected ls -p line %q", line)
		}
		if name := f[5]; name != "." && name != ".." && name != "partial" {
			left = append(left, name)
		}
	}
	if len(left) > 0 {
		t.Errorf("apt lists not emptied: %v", left)
	}
	if !strings.Contains(debugfs(t, out, "stats"), "Filesystem volume name:   rootfs") {
		t.Error("label is not rootfs")
	}
	if !strings.Contains(logged.String(), "msg=mmdebstrap") {
		t.Error("mmdebstrap's progress was not logged")
	}
	assertNoMountsUnder(t, work)
	assertEmptyDir(t, work)
}

// Cancelled mid-bootstrap: mmdebstrap is stopped, its mounts gone, the tree removed, no image.
func TestBuildRealBootstrapCancelled(t *testing.T) {
	slowPrereqs(t)
	work, out := t.TempDir(), filepath.Join(t.TempDir(), "rootfs.ext4")
	r := Recipe{Suite: "bookworm", Mirror: "http://deb.debian.org/debian"}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	log, logged := testLogger()
	err := Build(ctx, r, work, out, log)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	t.Logf("stopped %s after the deadline", (time.Since(start) - 8*time.Second).Round(100*time.Millisecond))
	if n := strings.Count(logged.String(), "unmounting what mmdebstrap left"); n > 0 {
		t.Logf("mmdebstrap left %d mounts behind, detached by Build", n)
	}
	assertNoMountsUnder(t, work)
	assertEmptyDir(t, work)
	assertNoFile(t, out)
}
