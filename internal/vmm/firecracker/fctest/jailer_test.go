package fctest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// execJailer runs rel's test jailer with args and returns its exit code and output.
func execJailer(t *testing.T, jailer string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(jailer, args...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// jailerSetup is a base directory and an exec file named name (a copy of the fake, which
// then runs with --version only).
func jailerSetup(t *testing.T, rel Release, name string) (base, exe string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	base = filepath.Join(dir, "base")
	os.Mkdir(base, 0o755)
	exe = filepath.Join(dir, "bin", name)
	os.Mkdir(filepath.Dir(exe), 0o755)
	// A copy: a link would share the running jailer's inode (text file busy on open).
	data, err := os.ReadFile(rel.Firecracker)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return base, exe
}

func jailerArgs(base, exe string, extra ...string) []string {
	return append([]string{"--id", "vm-1", "--exec-file", exe, "--uid", "1950000001", "--gid", "1950000001",
		"--chroot-base-dir", base, "--cgroup-version", "2"}, extra...)
}

func TestJailerDouble(t *testing.T) {
	for _, v := range Versions {
		t.Run(SubtestName(v), func(t *testing.T) {
			rel, err := Build(v)
			if err != nil {
				t.Fatal(err)
			}
			prof, _ := NewProfile(v)
			if code, out := execJailer(t, rel.Jailer, "--version"); code != 0 || out != "Jailer v"+v+"\n\n" {
				t.Errorf("--version: %d %q", code, out)
			}
			// Roles do not come from names: a cache stores both binaries by digest.
			for bin, want := range map[string]string{rel.Jailer: "Jailer v", rel.Firecracker: "Firecracker v"} {
				blob := filepath.Join(t.TempDir(), "jailer-0a1b2c3d")
				if err := os.Link(bin, blob); err != nil {
					t.Fatal(err)
				}
				if code, out := execJailer(t, blob, "--version"); code != 0 || !strings.HasPrefix(out, want+v) {
					t.Errorf("%s as %s: %d %q, want %s%s", filepath.Base(bin), filepath.Base(blob), code, out, want, v)
				}
			}

			// The exec file's name: 1.6 wants "firecracker" in it, 1.16 does not care but
			// names the chroot after it.
			base, exe := jailerSetup(t, rel, "0a1b2c3d")
			code, out := execJailer(t, rel.Jailer, jailerArgs(base, exe, "--", "--version")...)
			if prof.ExecNameRule() {
				if code != 1 || !strings.Contains(out, `must contain "firecracker"`) {
					t.Errorf("exec file without the name: %d %q", code, out)
				}
			} else if code != 0 || !strings.Contains(out, "Firecracker v"+v) {
				t.Errorf("exec file without the name: %d %q", code, out)
			} else if _, err := os.Stat(filepath.Join(base, "0a1b2c3d", "vm-1", "root", "0a1b2c3d")); err != nil {
				t.Errorf("chroot not named after the exec file: %v", err)
			}

			// The canonical name counts, not a symlink's.
			base, exe = jailerSetup(t, rel, "firecracker")
			link := filepath.Join(filepath.Dir(exe), "fc-link")
			os.Symlink(exe, link)
			if code, out := execJailer(t, rel.Jailer, jailerArgs(base, link, "--", "--version")...); code != 0 {
				t.Fatalf("run: %d %s", code, out)
			}
			root := filepath.Join(base, "firecracker", "vm-1", "root")
			copied, err := os.Stat(filepath.Join(root, "firecracker"))
			orig, _ := os.Stat(exe)
			if err != nil || os.SameFile(copied, orig) {
				t.Errorf("the exec file is copied, never linked: %v", err)
			}
			for dev, want := range map[string]string{"dev/net/tun": "10:200", "dev/kvm": "10:232"} {
				fi, err := os.Stat(filepath.Join(root, dev))
				if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
					t.Errorf("%s (%s): %v", dev, want, err)
				}
			}
			_, pidErr := os.Stat(filepath.Join(root, "firecracker.pid"))
			if prof.PidFileAlways() != (pidErr == nil) {
				t.Errorf("pid file: %v (1.7+ always, 1.6 only with --new-pid-ns)", pidErr)
			}

			// A second run on the same chroot fails: on the device nodes it makes, and
			// (1.7+) on the pid file it creates exclusively; 1.15+ refuse an exec file
			// destination that is a hard link.
			if code, out := execJailer(t, rel.Jailer, jailerArgs(base, exe, "--", "--version")...); code != 1 || !strings.Contains(out, "file exists") {
				t.Errorf("stale chroot: %d %q", code, out)
			}
			os.RemoveAll(filepath.Join(root, "dev"))
			if prof.PidFileAlways() {
				code, out := execJailer(t, rel.Jailer, jailerArgs(base, exe, "--", "--version")...)
				if code != 1 || !strings.Contains(out, "firecracker.pid") {
					t.Errorf("stale pid file: %d %q", code, out)
				}
			}
			if prof.ExecCopyChecked() {
				os.Remove(filepath.Join(root, "firecracker"))
				os.Link(exe, filepath.Join(root, "firecracker"))
				code, out := execJailer(t, rel.Jailer, jailerArgs(base, exe, "--", "--version")...)
				if code != 1 || !strings.Contains(out, "hard link") {
					t.Errorf("linked destination: %d %q", code, out)
				}
			}

			// Refusals before anything is made.
			for _, tc := range []struct {
				args []string
				want string
			}{
				{[]string{"--id", "vm_1", "--exec-file", exe, "--uid", "1", "--gid", "1"}, "Invalid instance ID"},
				{[]string{"--id", "x", "--exec-file", exe, "--uid", "1"}, "'gid' required"},
				{[]string{"--id", "x", "--exec-file", exe, "--uid", "1", "--gid", "1", "--bogus"}, "wasn't expected"},
				{[]string{"--id", "x", "--exec-file", exe, "--uid", "1", "--gid", "1", "--chroot-base-dir", base, "--cgroup", "memory.max=1"}, "never writes to this host's cgroups"},
				{[]string{"--id", "x", "--exec-file", exe, "--uid", "1", "--gid", "1", "--chroot-base-dir", base, "--cgroup", "memory.max"}, "Invalid format for cgroups"},
				{[]string{"--id", "x", "--exec-file", exe, "--uid", "1", "--gid", "1", "--chroot-base-dir", base, "--daemonize"}, "--daemonize is not modelled"},
				{[]string{"--id", "x", "--exec-file", exe, "--uid", "1", "--gid", "1", "--chroot-base-dir", base, "--parent-cgroup", "../up"}, "Parent cgroup path is invalid"},
			} {
				if code, out := execJailer(t, rel.Jailer, tc.args...); code != 1 || !strings.Contains(out, tc.want) {
					t.Errorf("%q: %d %q, want %q", tc.args, code, out, tc.want)
				}
			}
		})
	}
}
