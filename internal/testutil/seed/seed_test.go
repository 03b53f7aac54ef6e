package seed

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/ulikunitz/xz"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/kernel"
	"github.com/firegopher/firegopher/internal/kernel/kerneltest"
)

// member is one parsed newc entry.
type member struct {
	mode         uint32
	data         []byte
	major, minor uint32
}

// readNewc parses an uncompressed newc archive strictly: magic, alignment, trailer last.
func readNewc(t *testing.T, b []byte) (map[string]member, []string) {
	t.Helper()
	files := map[string]member{}
	var order []string
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("newc header at %d: field %d: %v", off, i, err)
		}
		return uint32(v)
	}
	for {
		if off%4 != 0 || off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("newc: no header at offset %d", off)
		}
		mode, size, major, minor, namesize := field(1), field(6), field(9), field(10), field(11)
		nameStart := off + 110
		n := string(b[nameStart : nameStart+int(namesize)-1])
		dataStart := nameStart + int(namesize)
		dataStart += (4 - dataStart%4) % 4
		data := b[dataStart : dataStart+int(size)]
		off = dataStart + int(size)
		off += (4 - off%4) % 4
		if n == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("newc: %d bytes after the trailer", len(b)-off)
			}
			return files, order
		}
		if _, dup := files[n]; dup {
			t.Fatalf("newc: %q twice", n)
		}
		files[n] = member{mode: mode, data: data, major: major, minor: minor}
		order = append(order, n)
	}
}

func TestWriteNewcMatchesCpio(t *testing.T) {
	var b bytes.Buffer
	err := writeNewc(&b, []entry{
		{name: "init", mode: typeReg | 0o755, data: []byte("#!/bin/sh\n")},
		{name: "dev/console", mode: typeChar | 0o600, major: 5, minor: 1},
		{name: "bin/sh", mode: typeSymlink | 0o777, data: []byte("busybox")},
		{name: "a/b/c/odd", mode: typeReg | 0o600, data: []byte("xyz")},
		{name: "empty", mode: typeDir | 0o700},
	})
	if err != nil {
		t.Fatal(err)
	}
	files, order := readNewc(t, b.Bytes())
	want := []string{"a", "a/b", "a/b/c", "a/b/c/odd", "bin", "bin/sh", "dev", "dev/console", "empty", "init"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if c := files["dev/console"]; c.mode != typeChar|0o600 || c.major != 5 || c.minor != 1 {
		t.Errorf("dev/console: %+v", c)
	}
	if s := files["bin/sh"]; s.mode != typeSymlink|0o777 || string(s.data) != "busybox" {
		t.Errorf("bin/sh: %+v", s)
	}
	if d := files["empty"]; d.mode != typeDir|0o700 {
		t.Errorf("empty: mode %o", d.mode)
	}
	// GNU cpio must read it the same way.
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Fatal("cpio not found: install the Debian package cpio")
	}
	cmd := exec.Command(cpio, "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(b.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -itv: %v: %s", err, out)
	}
	for _, w := range []string{"crw-------", "5,   1", "dev/console", "bin/sh -> busybox", "-rwxr-xr-x", "init"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("cpio -itv lacks %q:\n%s", w, out)
		}
	}
}

func TestWriteNewcRejectsBadNames(t *testing.T) {
	for _, es := range [][]entry{
		{{name: "/abs", mode: typeReg}},
		{{name: "../up", mode: typeReg}},
		{{name: "a//b", mode: typeReg}},
		{{name: "x", mode: typeReg}, {name: "x", mode: typeReg}},
		{{name: "f", mode: typeReg}, {name: "f/g", mode: typeReg}},
	} {
		if err := writeNewc(io.Discard, es); err == nil {
			t.Errorf("%+v: no error", es)
		}
	}
}

// fakeTree is a module tree like Debian's cloud kernel's: virtio modules with their
// dependencies, crc32c only as an alias of crc32c-intel, ext4 built in.
func fakeTree(t *testing.T, withCRC bool) *kernel.ModuleTree {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lib/modules/6.1.0-test")
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, data, 0o644))
	}
	write("kernel/drivers/virtio/virtio_ring.ko", kerneltest.Module("depends="))
	write("kernel/drivers/virtio/virtio.ko", kerneltest.Module("depends=virtio_ring"))
	write("kernel/drivers/virtio/virtio_mmio.ko", kerneltest.Module("depends=virtio,virtio_ring"))
	write("kernel/drivers/virtio/virtio_pci.ko", kerneltest.Module("depends=virtio,virtio_ring")) // not wanted
	var xzb bytes.Buffer
	xw, err := xz.NewWriter(&xzb)
	must(t, err)
	xw.Write(kerneltest.Module("depends=virtio,virtio_ring"))
	must(t, xw.Close())
	write("kernel/drivers/block/virtio_blk.ko.xz", xzb.Bytes())
	write("kernel/net/core/failover.ko", kerneltest.Module("depends="))
	write("kernel/drivers/net/net_failover.ko", kerneltest.Module("depends=failover"))
	write("kernel/drivers/net/virtio_net.ko", kerneltest.Module("depends=net_failover,virtio,virtio_ring"))
	if withCRC {
		write("kernel/arch/x86/crypto/crc32c-intel.ko", kerneltest.Module("alias=crypto-crc32c", "alias=crc32c", "depends="))
		write("modules.builtin", []byte("kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n"))
	}
	tree, err := kernel.OpenModuleTree(dir)
	must(t, err)
	return tree
}

func TestBuildInitrd(t *testing.T) {
	busybox, err := StaticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	k := &Kernel{Version: "6.1.0-test", Modules: fakeTree(t, true)}
	rd, err := BuildInitrd(k, busybox)
	if err != nil {
		t.Fatal(err)
	}
	wantMods := []string{
		"kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_mmio.ko",
		"kernel/drivers/block/virtio_blk.ko", "kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko",
		"kernel/drivers/net/virtio_net.ko", "kernel/arch/x86/crypto/crc32c-intel.ko",
	}
	if !reflect.DeepEqual(rd.Modules, wantMods) || len(rd.Absent) != 0 {
		t.Errorf("modules %v, absent %v; want %v and none absent", rd.Modules, rd.Absent, wantMods)
	}
	files, _ := readNewc(t, rd.Data)
	for _, m := range wantMods {
		f, ok := files["lib/modules/6.1.0-test/"+m]
		if !ok || f.mode != typeReg|0o644 || !bytes.HasPrefix(f.data, []byte("\x7fELF")) {
			t.Errorf("module %s: present %v, mode %o, want a plain (decompressed) ELF 0644", m, ok, f.mode)
		}
	}
	if _, ok := files["lib/modules/6.1.0-test/kernel/drivers/virtio/virtio_pci.ko"]; ok {
		t.Error("virtio_pci carried: the seed loads only virtio_mmio")
	}
	bb, _ := os.ReadFile(busybox)
	checks := []struct {
		name string
		mode uint32
		data []byte
	}{
		{"init", typeReg | 0o755, []byte(initScript)},
		{"bin/busybox", typeReg | 0o755, bb},
		{"bin/sh", typeSymlink | 0o777, []byte("busybox")},
		{"sbin/switch_root", typeSymlink | 0o777, []byte("../bin/busybox")},
		{"sbin/modprobe", typeSymlink | 0o777, []byte("../bin/busybox")},
		{"sbin/udhcpc", typeSymlink | 0o777, nil},
		{"dev/console", typeChar | 0o600, nil},
		{"dev/null", typeChar | 0o666, nil},
		{"dev/tty", typeChar | 0o666, nil},
		{"bin/simple.script", typeReg | 0o755, nil},
		{"mnt", typeDir | 0o755, nil},
		{"lib64", typeDir | 0o755, nil},
	}
	for _, c := range checks {
		f, ok := files[c.name]
		if !ok {
			// udhcpc's place differs between busybox builds.
			if c.name == "sbin/udhcpc" {
				if _, ok := files["usr/bin/udhcpc"]; ok {
					continue
				}
				if _, ok := files["bin/udhcpc"]; ok {
					continue
				}
			}
			t.Errorf("%s missing", c.name)
			continue
		}
		if f.mode != c.mode || (c.data != nil && !bytes.Equal(f.data, c.data)) {
			t.Errorf("%s: mode %o, %d bytes; want mode %o and the expected content", c.name, f.mode, len(f.data), c.mode)
		}
	}
	if c := files["dev/console"]; c.major != 5 || c.minor != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", c.major, c.minor)
	}
	for _, step := range []string{
		"mount -t devtmpfs dev /dev", "depmod", "modprobe virtio_mmio $(grep -o \"device=[^ ]*\" /proc/cmdline | paste -s)",
		"modprobe crc32c", "mount /dev/vda /mnt/", "udhcpc -t 5 -q -s /bin/simple.script",
		"if [ -L /mnt/etc/resolv.conf ]; then", "exec switch_root /mnt/ /sbin/init",
	} {
		if !strings.Contains(initScript, step) {
			t.Errorf("/init lacks %q", step)
		}
	}
	// Every module name the init loads appears in it, in the seed's order.
	last := -1
	for _, m := range InitModules {
		i := strings.Index(initScript, "modprobe "+m)
		if i < last {
			t.Errorf("/init modprobes %s out of order", m)
		}
		last = i
	}
}

func TestBuildInitrdReportsNamesTheTreeLacks(t *testing.T) {
	busybox, err := StaticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	rd, err := BuildInitrd(&Kernel{Version: "6.1.0-test", Modules: fakeTree(t, false)}, busybox)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rd.Absent, []string{"ext4", "crc32c"}) {
		t.Errorf("absent %v, want [ext4 crc32c]", rd.Absent)
	}
}

func TestCachedDefaultKernel(t *testing.T) {
	root := t.TempDir()
	store, err := assets.Open(root)
	must(t, err)
	vmlinux, err := store.PutBytes([]byte("\x7fELF fake kernel"))
	must(t, err)
	mod, err := store.PutBytes(kerneltest.Module("depends="))
	must(t, err)
	manifest := func(path string) assets.Digest {
		d, err := store.PutJSON(&assets.Kernel{Source: "test", Version: "6.1.0-test", Vmlinux: vmlinux,
			Modules: []assets.Module{{Path: path, Digest: mod}}})
		must(t, err)
		return d
	}
	must(t, store.Tag("kernel/default", manifest("kernel/drivers/virtio/virtio_ring.ko")))
	k, err := CachedDefaultKernel(root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != "6.1.0-test" || k.Vmlinux != store.Path(vmlinux) {
		t.Errorf("kernel %+v", k)
	}
	if mods, err := k.Modules.Resolve([]string{"virtio_ring"}); err != nil || len(mods) != 1 {
		t.Errorf("module tree: %v, %v", mods, err)
	}

	must(t, store.Tag("kernel/default", manifest("../../escape.ko")))
	if _, err := CachedDefaultKernel(root, t.TempDir()); err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Errorf("err = %v, want one about a module path escaping the tree", err)
	}
	if _, err := CachedDefaultKernel(filepath.Join(root, "nope"), t.TempDir()); err == nil || !strings.Contains(err.Error(), "firegopher prepare") {
		t.Errorf("err = %v, want one saying to run firegopher prepare", err)
	}
}

func TestKernelImageLayoutThroughARegistry(t *testing.T) {
	vmlinux, initrd := []byte("\x7fELF kernel"), []byte("070701 initrd")
	img, err := KernelImage(vmlinux, initrd)
	must(t, err)
	again, err := KernelImage(vmlinux, initrd)
	must(t, err)
	d1, err := img.Digest()
	must(t, err)
	d2, err := again.Digest()
	must(t, err)
	if d1 != d2 {
		t.Errorf("same inputs, digests %s and %s: not reproducible", d1, d2)
	}

	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://")+"/kt/debian-kernel:6.1-x86_64-test", name.Insecure)
	must(t, err)
	must(t, remote.Write(ref, img))
	pulled, err := remote.Image(ref)
	must(t, err)
	if d, _ := pulled.Digest(); d != d1 {
		t.Errorf("pulled digest %s, pushed %s", d, d1)
	}
	cf, err := pulled.ConfigFile()
	must(t, err)
	if cf.OS != "linux" || cf.Architecture != "amd64" || len(cf.Config.Cmd) != 0 || len(cf.Config.Entrypoint) != 0 {
		t.Errorf("config: os %q arch %q cmd %v entrypoint %v", cf.OS, cf.Architecture, cf.Config.Cmd, cf.Config.Entrypoint)
	}
	layers, err := pulled.Layers()
	must(t, err)
	want := []map[string]string{
		{"boot/": "dir", "boot/vmlinux": string(vmlinux)},
		{"boot/": "dir", "boot/initrd": string(initrd)},
		{"lib/": "dir", "lib/modules/": "dir", "lib/modules/.placeholder": ""},
	}
	if len(layers) != len(want) {
		t.Fatalf("%d layers, want %d", len(layers), len(want))
	}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		must(t, err)
		got := map[string]string{}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			must(t, err)
			if h.Typeflag == tar.TypeDir {
				got[h.Name] = "dir"
				continue
			}
			b, _ := io.ReadAll(tr)
			got[h.Name] = string(b)
			if h.Mode != 0o644 || h.Uid != 0 || h.Gid != 0 {
				t.Errorf("layer %d %s: mode %o %d:%d", i, h.Name, h.Mode, h.Uid, h.Gid)
			}
		}
		rc.Close()
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("layer %d holds %v, want %v", i, got, want[i])
		}
	}
}

func TestRelTo(t *testing.T) {
	for link, want := range map[string]string{"bin/sh": "busybox", "sbin/init": "../bin/busybox", "usr/bin/wget": "../../bin/busybox"} {
		if got := relTo(link, "bin/busybox"); got != want {
			t.Errorf("relTo(%s) = %s, want %s", link, got, want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
