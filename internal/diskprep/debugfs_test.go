package diskprep

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// tool finds an e2fsprogs program or fails (never skips) naming the package.
func tool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range sbinDirs {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	t.Fatalf("%s not found: install the Debian package e2fsprogs", name)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// seedImage makes a small ext4 like a flattened container image: /etc/resolv.conf a
// symlink, a baked-in ssh host key, /root without .ssh.
func seedImage(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for _, d := range []string{"etc/ssh", "root", "run/systemd/resolve", "srv"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/ssh/ssh_host_ed25519_key":     "BAKED PRIVATE KEY\n",
		"etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 BAKED\n",
		"etc/ssh/ssh_host_dsa_key":         "OLD DSA\n",
		"etc/hostname":                     "image\n",
		"run/systemd/resolve/stub.conf":    "nameserver 127.0.0.53\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../run/systemd/resolve/stub.conf", filepath.Join(src, "etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "root.ext4")
	out, err := exec.Command(tool(t, "mkfs.ext4"), "-q", "-b", "4096", "-E", "root_owner=0:0", "-d", src, img, "32M").CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}

// debugfsR runs one read-only request; stderr beyond the banner fails the test.
func debugfsR(t *testing.T, img, req string) string {
	t.Helper()
	cmd := exec.Command(tool(t, "debugfs"), "-R", req, img)
	cmd.Env = append(os.Environ(), "DEBUGFS_PAGER=__none__")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v: %s", req, err, stderr.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if l != "" && !strings.HasPrefix(l, "debugfs ") {
			t.Fatalf("debugfs -R %q: %s", req, stderr.String())
		}
	}
	return string(out)
}

func statOf(t *testing.T, img, p string) inode {
	t.Helper()
	in, err := parseStat(strings.Split(debugfsR(t, img, "stat "+quote(p)), "\n"))
	if err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	return in
}

func missing(t *testing.T, img, p string) bool {
	t.Helper()
	cmd := exec.Command(tool(t, "debugfs"), "-R", "stat "+quote(p), img)
	out, _ := cmd.CombinedOutput()
	return strings.Contains(string(out), "File not found by ext2_lookup")
}

func fsckClean(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command(tool(t, "e2fsck"), "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
}

func TestApplySSHAccessHostKeysAndResolvConf(t *testing.T) {
	img := seedImage(t)
	keys, err := GenerateHostKeys("root@test")
	if err != nil {
		t.Fatal(err)
	}
	authorized := []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host\n")
	resolv := []byte("nameserver 1.1.1.1\n")
	var e Edits
	e.AuthorizeRoot(authorized)
	keys.Install(&e, "root@test")
	e.WriteFile("/etc/resolv.conf", resolv, 0o644, 0, 0)
	e.Remove("/etc/hostname")
	e.Remove("/etc/not-there")
	if err := Apply(context.Background(), quiet, img, &e); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		path     string
		kind     kind
		perm     uint32
		uid, gid uint32
		data     []byte
	}{
		{"/root/.ssh", dir, 0o700, 0, 0, nil},
		{"/root/.ssh/authorized_keys", regular, 0o600, 0, 0, authorized},
		{"/etc/resolv.conf", regular, 0o644, 0, 0, resolv},
	}
	for _, k := range keys {
		want = append(want,
			struct {
				path     string
				kind     kind
				perm     uint32
				uid, gid uint32
				data     []byte
			}{"/etc/ssh/ssh_host_" + k.Type + "_key", regular, 0o600, 0, 0, k.Private},
			struct {
				path     string
				kind     kind
				perm     uint32
				uid, gid uint32
				data     []byte
			}{"/etc/ssh/ssh_host_" + k.Type + "_key.pub", regular, 0o644, 0, 0, k.AuthorizedLine("root@test")})
	}
	for _, w := range want {
		in := statOf(t, img, w.path)
		if in.kind != w.kind || in.perm != w.perm || in.uid != w.uid || in.gid != w.gid {
			t.Errorf("%s: %s %04o %d:%d, want %s %04o %d:%d", w.path, in.kind, in.perm, in.uid, in.gid, w.kind, w.perm, w.uid, w.gid)
		}
		if w.data != nil {
			if got := debugfsR(t, img, "cat "+quote(w.path)); got != string(w.data) {
				t.Errorf("%s holds %q, want %q", w.path, got, w.data)
			}
		}
	}
	for _, p := range []string{"/etc/hostname", "/etc/ssh/ssh_host_dsa_key"} {
		if !missing(t, img, p) {
			t.Errorf("%s still exists", p)
		}
	}
	// The old symlink's target is untouched: the new resolv.conf is a new inode.
	if got := debugfsR(t, img, "cat /run/systemd/resolve/stub.conf"); got != "nameserver 127.0.0.53\n" {
		t.Errorf("symlink target changed to %q", got)
	}
	fsckClean(t, img)
}

func TestApplyKeepsAnExistingDirectoryButSetsItsMode(t *testing.T) {
	img := seedImage(t)
	var e Edits
	e.Mkdir("/srv", 0o750|fs.ModeSetgid, 1000, 1001)
	e.WriteFile("/srv/a", []byte("x"), 0o640, 1000, 1001)
	e.Mkdir("/srv/new", 0o700, 123456, 7) // uid above 16 bits: ext4 stores a high half
	if err := Apply(context.Background(), quiet, img, &e); err != nil {
		t.Fatal(err)
	}
	if in := statOf(t, img, "/srv"); in.kind != dir || in.perm != 0o2750 || in.uid != 1000 || in.gid != 1001 {
		t.Errorf("/srv: %+v", in)
	}
	if in := statOf(t, img, "/srv/new"); in.kind != dir || in.perm != 0o700 || in.uid != 123456 || in.gid != 7 {
		t.Errorf("/srv/new: %+v", in)
	}
	fsckClean(t, img)
}

// debugfs's own quoting: a name with spaces, quotes, backslashes, tabs, '#', ';', a leading
// dash or UTF-8 must land under exactly that name.
func TestApplyOddNames(t *testing.T) {
	img := seedImage(t)
	names := []string{
		"a b", `q"uote`, `""`, `back\slash`, "tab\there", "#hash", "semi;colon", "-dash", " lead", "trail ",
		"'single'", "ünï cödé", "$HOME", "*", "dir with space",
	}
	var e Edits
	e.Mkdir("/srv/dir with space", 0o755, 0, 0)
	for i, n := range names {
		if n == "dir with space" {
			e.WriteFile("/srv/dir with space/f \"x\"", []byte("nested"), 0o600, 0, 0)
			continue
		}
		e.WriteFile("/srv/"+n, []byte{byte('A' + i)}, 0o644, 0, 0)
	}
	if err := Apply(context.Background(), quiet, img, &e); err != nil {
		t.Fatal(err)
	}
	ls := debugfsR(t, img, "ls -p /srv")
	for i, n := range names {
		// ls -p prints /ino/mode/uid/gid/name/size/ with the raw name.
		if !strings.Contains(ls, "/"+n+"/") {
			t.Errorf("ls /srv lacks %q:\n%s", n, ls)
			continue
		}
		if n == "dir with space" {
			continue
		}
		if got := debugfsR(t, img, "cat "+quote("/srv/"+n)); got != string(rune('A'+i)) {
			t.Errorf("/srv/%s holds %q, want %q", n, got, string(rune('A'+i)))
		}
	}
	if got := debugfsR(t, img, "cat "+quote(`/srv/dir with space/f "x"`)); got != "nested" {
		t.Errorf("nested file holds %q", got)
	}
	fsckClean(t, img)
}

func TestApplyRejectsBadRequestsBeforeTouchingTheImage(t *testing.T) {
	tests := []struct {
		name string
		edit func(e *Edits)
		want string
	}{
		{"relative", func(e *Edits) { e.WriteFile("etc/x", nil, 0o644, 0, 0) }, "not absolute"},
		{"dotdot", func(e *Edits) { e.WriteFile("/etc/../x", nil, 0o644, 0, 0) }, "not clean"},
		{"trailing slash", func(e *Edits) { e.Mkdir("/srv/x/", 0o755, 0, 0) }, "not clean"},
		{"newline", func(e *Edits) { e.WriteFile("/etc/a\nrm /etc/passwd", nil, 0o644, 0, 0) }, "LF"},
		{"NUL", func(e *Edits) { e.WriteFile("/etc/a\x00b", nil, 0o644, 0, 0) }, "NUL"},
		{"root", func(e *Edits) { e.Mkdir("/", 0o755, 0, 0) }, "root directory"},
		{"long name", func(e *Edits) { e.WriteFile("/"+strings.Repeat("n", 256), nil, 0o644, 0, 0) }, "255"},
		{"twice", func(e *Edits) { e.Remove("/etc/hostname"); e.WriteFile("/etc/hostname", nil, 0o644, 0, 0) }, "twice"},
		{"type bits", func(e *Edits) { e.WriteFile("/etc/x", nil, fs.ModeSymlink|0o777, 0, 0) }, "only permission"},
		{"file over dir", func(e *Edits) { e.WriteFile("/etc/ssh", nil, 0o644, 0, 0) }, "exists as a directory"},
		{"dir over file", func(e *Edits) { e.Mkdir("/etc/hostname", 0o755, 0, 0) }, "exists as a regular file"},
		{"dir over symlink", func(e *Edits) { e.Mkdir("/etc/resolv.conf", 0o755, 0, 0) }, "symlink"},
		{"remove dir", func(e *Edits) { e.Remove("/etc/ssh") }, "is a directory"},
		{"no parent", func(e *Edits) { e.WriteFile("/nope/x", nil, 0o644, 0, 0) }, "parent is absent"},
		{"parent is file", func(e *Edits) { e.WriteFile("/etc/hostname/x", nil, 0o644, 0, 0) }, "parent is regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := seedImage(t)
			before, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			var e Edits
			e.WriteFile("/etc/motd", []byte("first change of the batch\n"), 0o644, 0, 0)
			tt.edit(&e)
			err = Apply(context.Background(), quiet, img, &e)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			after, _ := os.ReadFile(img)
			if !bytes.Equal(before, after) {
				t.Error("image changed although the batch was refused")
			}
		})
	}
}

func TestApplyReportsDebugfsFailures(t *testing.T) {
	t.Run("not ext4", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "zero.img")
		if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		var e Edits
		e.WriteFile("/x", nil, 0o644, 0, 0)
		err := Apply(context.Background(), quiet, img, &e)
		if err == nil || !strings.Contains(err.Error(), "debugfs") || !strings.Contains(err.Error(), "zero.img") {
			t.Fatalf("err = %v, want a debugfs error naming the image", err)
		}
	})
	t.Run("full", func(t *testing.T) {
		// debugfs exits 0 when a write runs out of space; Apply must notice.
		img := seedImage(t)
		var e Edits
		e.WriteFile("/big", bytes.Repeat([]byte("x"), 64<<20), 0o644, 0, 0)
		err := Apply(context.Background(), quiet, img, &e)
		if err == nil || !strings.Contains(err.Error(), "/big") {
			t.Fatalf("err = %v, want one naming /big", err)
		}
	})
	t.Run("missing tool", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		saved := sbinDirs
		sbinDirs = nil
		defer func() { sbinDirs = saved }()
		var e Edits
		e.Remove("/x")
		err := Apply(context.Background(), quiet, "/nonexistent.img", &e)
		if err == nil || !strings.Contains(err.Error(), "e2fsprogs") {
			t.Fatalf("err = %v, want one naming the package e2fsprogs", err)
		}
	})
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{`a`: `"a"`, `a b`: `"a b"`, `q"u`: `"q""u"`, `""`: `""""""`, `\`: `"\"`} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %q, want %q", in, got, want)
		}
	}
}
