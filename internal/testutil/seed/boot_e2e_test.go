//go:build e2e

package seed

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/firegopher/firegopher/internal/diskprep"
	"github.com/firegopher/firegopher/internal/image"
	"github.com/firegopher/firegopher/internal/vmm/qemu"
)

// rootInit is the test root's /sbin/init: it reports what the seed initrd left behind
// (network, resolv.conf, the debugfs edits) and reboots, which ends QEMU (-no-reboot).
const rootInit = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "ROOT-INIT pid=$$"
echo "RESOLV $(/bin/busybox stat -c %F /etc/resolv.conf) $(/bin/busybox cat /etc/resolv.conf | /bin/busybox grep nameserver)"
echo "ETH0 $(/bin/busybox ip -4 -o addr show dev eth0 | /bin/busybox grep -o 'inet [0-9./]*')"
echo "SSHDIR $(/bin/busybox stat -c '%a %u:%g' /root/.ssh)"
echo "AUTHKEYS $(/bin/busybox stat -c '%a %u:%g' /root/.ssh/authorized_keys) $(/bin/busybox cat /root/.ssh/authorized_keys)"
echo "HOSTKEY $(/bin/busybox stat -c '%a %u:%g' /etc/ssh/ssh_host_ed25519_key) $(/bin/busybox head -c 35 /etc/ssh/ssh_host_ed25519_key)"
echo "MODULES $(/bin/busybox cut -d' ' -f1 /proc/modules | /bin/busybox sort | /bin/busybox tr '\n' ' ')"
echo ROOT-INIT-END
/bin/busybox reboot -f
`

// TestSeedKernelImageBootsToRootInit builds the seed-style kernel image from the cached
// default kernel, pushes it to a registry on loopback, pulls it back, and boots its
// vmlinux and initrd under QEMU microvm (TCG, TSC fix) with a debugfs-edited ext4 root as
// the first virtio-blk device and a NIC whose DHCP is QEMU's built-in one (restrict=on:
// the guest reaches nothing outside QEMU), up to the root's own /sbin/init. The NIC is
// needed: the initrd's `udhcpc -t 5 -q` has no -n, so with an eth0 but no DHCP server it
// retries forever (as in the seed); QEMU's own DHCP answers at once (~0.1 s). The whole
// boot takes about 8 s under TCG on 2 busy cores, most of it the kernel.
func TestSeedKernelImageBootsToRootInit(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 not found: install the Debian package qemu-system-x86")
	}
	state := os.Getenv("FIREGOPHER_STATE_DIR")
	if state == "" {
		state = "/var/lib/firegopher"
	}
	k, err := CachedDefaultKernel(filepath.Join(state, "cache"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	busybox, err := StaticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	rd, err := BuildInitrd(k, busybox)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s; initrd %d bytes, modules %v; not modules here (built in or absent): %v", k.Version, len(rd.Data), rd.Modules, rd.Absent)
	vmlinux, err := os.ReadFile(k.Vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	img, err := KernelImage(vmlinux, rd.Data)
	if err != nil {
		t.Fatal(err)
	}

	// Through a registry and back, the way `firegopher up` would get it.
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://")+"/falcosecurity/kernel-testing/debian-kernel:6.1-x86_64-test", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	files := extract(t, mutate.Extract(pulled))
	dir := t.TempDir()
	kernelPath, initrdPath := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd")
	must(t, os.WriteFile(kernelPath, files["boot/vmlinux"], 0o644))
	must(t, os.WriteFile(initrdPath, files["boot/initrd"], 0o644))

	// The root disk: a symlinked resolv.conf (as container images have), a baked host key.
	tree := t.TempDir()
	for _, d := range []string{"bin", "sbin", "etc/ssh", "root", "proc", "sys", "dev", "run", "tmp"} {
		must(t, os.MkdirAll(filepath.Join(tree, d), 0o755))
	}
	bb, err := os.ReadFile(busybox)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(tree, "bin/busybox"), bb, 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "sbin/init"), []byte(rootInit), 0o755))
	must(t, os.WriteFile(filepath.Join(tree, "etc/ssh/ssh_host_ed25519_key"), []byte("BAKED\n"), 0o600))
	must(t, os.Symlink("../run/systemd/resolve/stub-resolv.conf", filepath.Join(tree, "etc/resolv.conf")))
	rootDisk := filepath.Join(dir, "root.ext4")
	must(t, image.MakeExt4With(context.Background(), tree, rootDisk, image.Ext4Options{Size: 64 << 20, Features: image.FeaturesLegacy}))
	keys, err := diskprep.GenerateHostKeys("root@seed")
	must(t, err)
	var edits diskprep.Edits
	edits.AuthorizeRoot([]byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey seed-test\n"))
	keys.Install(&edits, "root@seed")
	must(t, diskprep.Apply(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), rootDisk, &edits))

	tsc, err := qemu.MicrovmTCGCmdline()
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-M", "microvm,accel=tcg,acpi=on", "-cpu", "max", "-smp", "1", "-m", "256M",
		"-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", kernelPath, "-initrd", initrdPath,
		// kernel-testing's boot_args plus what Firecracker appends for the root drive; the
		// initrd ignores root= and mounts /dev/vda itself.
		"-append", "rw console=ttyS0 root=/dev/vda panic=-1 reboot=k "+tsc,
		"-drive", "id=root,file="+rootDisk+",format=raw,if=none",
		"-device", "virtio-blk-device,drive=root",
		"-netdev", "user,id=eth0,restrict=on",
		"-device", "virtio-net-device,netdev=eth0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	serial := out.String()
	if ctx.Err() != nil || err != nil {
		t.Fatalf("qemu: %v (after %s); serial:\n%s", err, took.Round(time.Millisecond), serial)
	}
	if !strings.Contains(serial, "ROOT-INIT-END") {
		t.Fatalf("the root's /sbin/init did not run to its end (%s); serial:\n%s", took.Round(time.Millisecond), serial)
	}
	t.Logf("booted to the root's /sbin/init and back in %s", took.Round(time.Millisecond))

	line := func(prefix string) string {
		m := regexp.MustCompile(`(?m)^` + prefix + ` (.*?)\r?$`).FindStringSubmatch(serial)
		if m == nil {
			t.Errorf("no %s line", prefix)
			return ""
		}
		return strings.TrimSpace(m[1])
	}
	if got := line("ROOT-INIT"); got != "pid=1" {
		t.Errorf("root init: %q, want pid=1 (switch_root must exec it as PID 1)", got)
	}
	defer func() {
		if t.Failed() {
			t.Logf("serial:\n%s", serial)
		}
	}()
	// QEMU's DHCP offers no DNS server with restrict=on, so the initrd's resolv.conf is
	// empty: what matters is that the symlink became a regular file with its content.
	if got := line("RESOLV"); got != "regular empty file" {
		t.Errorf("resolv.conf: %q, want the initrd's (empty) resolv.conf copied over the symlink", got)
	}
	if got := line("ETH0"); got != "inet 10.0.2.15/24" {
		t.Errorf("eth0: %q, want the DHCP lease inet 10.0.2.15/24 kept after switch_root", got)
	}
	if got := line("SSHDIR"); got != "700 0:0" {
		t.Errorf("/root/.ssh: %q, want 700 0:0", got)
	}
	if got := line("AUTHKEYS"); got != "600 0:0 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey seed-test" {
		t.Errorf("authorized_keys: %q", got)
	}
	if got := line("HOSTKEY"); got != "600 0:0 -----BEGIN OPENSSH PRIVATE KEY-----" {
		t.Errorf("host key: %q, want the fresh 0600 OpenSSH key instead of the baked one", got)
	}
	mods := " " + line("MODULES") + " "
	for _, m := range rd.Modules {
		n := strings.TrimSuffix(filepath.Base(m), ".ko")
		if !strings.Contains(mods, " "+strings.ReplaceAll(n, "-", "_")+" ") {
			t.Errorf("module %s not loaded; /proc/modules: %s", n, mods)
		}
	}
}

func extract(t *testing.T, rc io.ReadCloser) map[string][]byte {
	t.Helper()
	defer rc.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		must(t, err)
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			must(t, err)
			files[h.Name] = b
		}
	}
}
