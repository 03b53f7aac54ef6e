//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The guest's PID 1 sets up what programs expect; these check it from inside a real VM.

func TestGuestMounts(t *testing.T) {
	r := firegopher(t, "run", "--", "cat", "/proc/mounts")
	for _, want := range []string{" / ext4 ", " /proc proc ", " /sys sysfs ", " /dev devtmpfs ", " /dev/pts devpts ",
		" /dev/shm tmpfs ", " /dev/mqueue mqueue ", " /run tmpfs ", " /tmp tmpfs ", " /sys/fs/cgroup cgroup2 "} {
		if !strings.Contains(string(r.stdout), want) {
			t.Errorf("/proc/mounts lacks %q", want)
		}
	}
	if r.code != 0 {
		t.Fatal(r)
	}
}

func TestGuestUserEnvWorkdirLimits(t *testing.T) {
	r := firegopher(t, "run", "--user", "nobody", "-e", "A=1", "-w", "/tmp", "--",
		"sh", "-c", `id -u; id -g; echo "$A $HOME"; pwd; ulimit -n; ls -l /dev/fd/ >/dev/null && echo fd-ok; grep NoNewPrivs /proc/self/status`)
	want := "65534\n65534\n1 /nonexistent\n/tmp\n65536\nfd-ok\nNoNewPrivs:\t1\n"
	if r.code != 0 || string(r.stdout) != want {
		t.Fatalf("want %q:\n%s", want, r)
	}
}

func TestGuestUnknownUserIsAClearError(t *testing.T) {
	r := firegopher(t, "run", "--user", "ghost", "--", "true")
	if r.code != 125 || !strings.Contains(string(r.stderr), `user "ghost": no such user`) {
		t.Fatalf("want exit 125 naming the user:\n%s", r)
	}
}

func TestGuestReapsDoubleForkedChildren(t *testing.T) {
	// 100 double-forked children reparent to PID 1; only init can reap them.
	script := `for i in $(seq 100); do (sh -c 'exit 0' &); done
count() { grep -l '^[0-9]* ([^)]*) Z' /proc/[0-9]*/stat 2>/dev/null | wc -l; }
for t in $(seq 100); do z=$(count); [ "$z" -eq 0 ] && break; sleep 0.05; done
echo zombies=$(count)`
	r := firegopher(t, "run", "--", "sh", "-c", script)
	if r.code != 0 || strings.TrimSpace(string(r.stdout)) != "zombies=0" {
		t.Fatalf("zombies left:\n%s", r)
	}
}

func TestGuestHostsAndHostname(t *testing.T) {
	r := firegopher(t, "run", "--name", "hosty", "--", "sh", "-c", "hostname; cat /etc/hostname; grep -c hosty /etc/hosts")
	if r.code != 0 || string(r.stdout) != "hosty\nhosty\n1\n" {
		t.Fatalf("%s", r)
	}
}

func TestGuestFilesFromTheHost(t *testing.T) {
	dir := t.TempDir()
	tool := filepath.Join(dir, "tool")
	os.WriteFile(tool, []byte("#!/bin/sh\necho tool ran as $(id -u)\n"), 0o644)
	key := filepath.Join(dir, "id.pub")
	os.WriteFile(key, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e2e e2e@test\n"), 0o644)
	r := firegopher(t, "run", "--copy", tool+":/usr/local/bin/tool:0755", "--authorized-key", key, "--",
		"sh", "-c", "tool; stat -c '%a %U' /usr/local/bin/tool /root/.ssh /root/.ssh/authorized_keys; cat /root/.ssh/authorized_keys")
	want := "tool ran as 0\n755 root\n700 root\n600 root\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2e2e e2e@test\n"
	if r.code != 0 || string(r.stdout) != want {
		t.Fatalf("want %q:\n%s", want, r)
	}
}

// TestSystemModeHandsPID1ToTheImagesInit: our init prepares the VM, then the image's own
// /sbin/init runs as PID 1 (here a script standing in for systemd, which powers off).
func TestSystemModeHandsPID1ToTheImagesInit(t *testing.T) {
	script := filepath.Join(t.TempDir(), "init")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"image init is pid $$ on $(hostname)\" > /dev/console\necho o > /proc/sysrq-trigger\nsleep 60\n"), 0o755)
	id := detached(t, "--system", "--name", "sysvm", "--copy", script+":/sbin/init:0755")
	if r := firegopher(t, "wait", id); strings.TrimSpace(string(r.stdout)) != "0" {
		t.Fatalf("a system VM that powers off ends with 0:\n%s", r)
	}
	console, err := os.ReadFile(filepath.Join(stateDir, "vms", id, "console.log"))
	if err != nil || !strings.Contains(string(console), "image init is pid 1 on sysvm") {
		t.Fatalf("the image's init did not run as PID 1: %v\n%s", err, console)
	}
	if r := firegopher(t, "run", "--system", "--", "true"); r.code != 125 || !strings.Contains(string(r.stderr), "--system") {
		t.Fatalf("--system with a command: %s", r)
	}
}

// TestGuestNoNewPrivsOnEveryExec: no_new_privs is per thread, so init must set it on the
// thread that forks each workload, every time (an exec inherits the VM's --user).
func TestGuestNoNewPrivsOnEveryExec(t *testing.T) {
	id := detached(t, "--user", "nobody", "--", "sh", "-c", "echo ready; exec sleep 300")
	waitForOutput(t, id, "ready")
	for i := 0; i < 20; i++ {
		if r := firegopher(t, "exec", id, "--", "grep", "NoNewPrivs", "/proc/self/status"); r.code != 0 || string(r.stdout) != "NoNewPrivs:\t1\n" {
			t.Fatalf("exec %d of 20:\n%s", i+1, r)
		}
	}
}
