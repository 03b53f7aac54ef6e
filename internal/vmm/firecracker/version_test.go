package firecracker

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/kernel/kerneltest"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// script writes an executable shell script printing out (a stand-in for a release binary).
func script(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadVersion(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, product, body string
		want                string // "" means an error containing wantErr
		wantErr             string
	}{
		{"firecracker 1.6", "Firecracker", `echo "Firecracker v1.6.0"; echo`, "1.6.0", ""},
		{"firecracker 1.16", "Firecracker", `printf 'Firecracker v1.16.1\n\n'`, "1.16.1", ""},
		{"jailer", "Jailer", `printf 'Jailer v1.16.1\n\n'`, "1.16.1", ""},
		{"dev build", "Firecracker", `echo "Firecracker v1.7.0-dev"`, "1.7.0-dev", ""},
		{"wrong product", "Jailer", `echo "Firecracker v1.6.0"`, "", `want "Jailer vX.Y.Z"`},
		{"garbage", "Firecracker", `echo "Firecracker version one"`, "", "MAJOR.MINOR.PATCH"},
		{"no --version", "Firecracker", `echo "unknown option" >&2; exit 2`, "", "unknown option"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ReadVersion(ctx, script(t, "bin", tc.body), tc.product)
			if tc.want != "" {
				if err != nil || v.String() != tc.want {
					t.Fatalf("got %v, %v; want %s", v, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, %v; want an error with %q", v, err, tc.wantErr)
			}
		})
	}
}

func TestCheckTested(t *testing.T) {
	for v, ok := range map[string]bool{
		"1.5.1": false, "1.6.0": true, "1.7.0": true, "1.12.3": true, "1.16.0": true,
		"1.16.1": true, "1.16.9": true, "1.17.0": false, "2.0.0": false, "0.25.0": false,
	} {
		ver, err := ParseVersion(v)
		if err != nil {
			t.Fatal(err)
		}
		err = CheckTested("firecracker", ver)
		if (err == nil) != ok {
			t.Errorf("%s: %v, want tested=%v", v, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "install --version 1.16.1") {
			t.Errorf("%s: the refusal must say what to install: %v", v, err)
		}
	}
}

// guestKernel writes a vmlinux stand-in: random-ish bytes with the built-in parameter's
// name in the middle when builtin, placed across the scanner's chunk boundary.
func guestKernel(t *testing.T, builtin bool) string {
	t.Helper()
	data := bytes.Repeat([]byte{0x90}, 1<<20+5)
	if builtin {
		data = append(data[:1<<20-4], []byte(mmioParam+"\x00tail")...)
	} else {
		// The name without its NUL (a help text mentioning it) does not count.
		data = append(data, []byte("see "+mmioParam+"=<size>@<base>:<irq>")...)
	}
	p := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(p, data, 0o444); err != nil {
		t.Fatal(err)
	}
	return p
}

// Debian's cloud kernel: virtio_mmio.ko with only aliases; a guest-config kernel's module
// declares the parameter.
var (
	moduleWithoutParam = kerneltest.Module("alias=acpi*:LNRO0005:*", "alias=of:N*T*Cvirtio,mmio", "depends=virtio,virtio_ring")
	moduleWithParam    = kerneltest.Module("parm=device:Virtio MMIO device description", "depends=virtio,virtio_ring")
)

func TestCheckKernel(t *testing.T) {
	v16, v17, v18, v116 := Version{1, 6, 0, ""}, Version{1, 7, 0, ""}, Version{1, 8, 0, ""}, Version{1, 16, 1, ""}
	plain, builtin := guestKernel(t, false), guestKernel(t, true)
	for _, tc := range []struct {
		name    string
		v       Version
		vmlinux string
		module  []byte
		ok      bool
	}{
		{"1.6, module without the parameter (Debian cloud)", v16, plain, moduleWithoutParam, false},
		{"1.7, module without the parameter", v17, plain, moduleWithoutParam, false},
		{"1.6, module with the parameter", v16, plain, moduleWithParam, true},
		{"1.6, built in with the parameter", v16, builtin, nil, true},
		{"1.6, built in without the parameter", v16, plain, nil, false},
		{"1.8 finds devices through ACPI", v18, plain, moduleWithoutParam, true},
		{"1.16 finds devices through ACPI", v116, plain, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckKernel(tc.v, tc.vmlinux, tc.module)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrNoMMIOCmdline) {
				t.Fatalf("got %v, want ErrNoMMIOCmdline", err)
			}
			for _, fix := range []string{"Firecracker 1.8.0 or newer", "install --version 1.16.1", "guest config"} {
				if !strings.Contains(err.Error(), fix) {
					t.Errorf("the refusal must name the fix %q: %v", fix, err)
				}
			}
		})
	}
	if err := CheckKernel(v16, filepath.Join(t.TempDir(), "absent"), nil); err == nil || errors.Is(err, ErrNoMMIOCmdline) {
		t.Errorf("missing vmlinux: %v", err)
	}
	if err := CheckKernel(v16, plain, []byte("not an ELF")); err == nil || errors.Is(err, ErrNoMMIOCmdline) {
		t.Errorf("corrupt module: %v", err)
	}
}

// TestMMIOModuleFromInitrd reads the module the guest would load from our initrd's layout.
func TestMMIOModuleFromInitrd(t *testing.T) {
	write := func(l initrd.Layer) string {
		p := filepath.Join(t.TempDir(), "initrd.cpio")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Write(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		return p
	}
	const mod = "/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio_mmio.ko"
	withModule := write(initrd.Layer{
		{Path: "/init", Mode: 0o755, Data: []byte("init")},
		{Path: mod, Mode: 0o644, Data: moduleWithoutParam},
		{Path: vmconfig.ModulesOrderPath, Mode: 0o644, Data: []byte("/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio.ko\n" + mod + "\n")},
	})
	got, err := MMIOModuleFromInitrd(withModule)
	if err != nil || !bytes.Equal(got, moduleWithoutParam) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	noModules := write(initrd.Layer{{Path: "/init", Mode: 0o755, Data: []byte("init")}})
	if got, err := MMIOModuleFromInitrd(noModules); got != nil || err != nil {
		t.Errorf("no modules.order: %d bytes, %v", len(got), err)
	}
	missing := write(initrd.Layer{{Path: vmconfig.ModulesOrderPath, Mode: 0o644, Data: []byte(mod + "\n")}})
	if _, err := MMIOModuleFromInitrd(missing); err == nil || !strings.Contains(err.Error(), "virtio_mmio.ko") {
		t.Errorf("listed but absent: %v", err)
	}
}

// TestCheckKernelOnCachedDebianKernel runs the gate on a real kernel when one is given:
// FIREGOPHER_TEST_VMLINUX (and FIREGOPHER_TEST_VIRTIO_MMIO_KO for its module, if modular).
func TestCheckKernelOnCachedDebianKernel(t *testing.T) {
	vmlinux := os.Getenv("FIREGOPHER_TEST_VMLINUX")
	if vmlinux == "" {
		t.Skip("FIREGOPHER_TEST_VMLINUX not set")
	}
	var mod []byte
	if p := os.Getenv("FIREGOPHER_TEST_VIRTIO_MMIO_KO"); p != "" {
		var err error
		if mod, err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := CheckKernel(Version{1, 16, 1, ""}, vmlinux, mod); err != nil {
		t.Errorf("1.16.1: %v", err)
	}
	// Debian's cloud kernel has virtio_mmio as a module without the parameter (FACTS 1.6).
	if err := CheckKernel(Version{1, 6, 0, ""}, vmlinux, mod); !errors.Is(err, ErrNoMMIOCmdline) {
		t.Errorf("1.6.0: %v, want the refusal", err)
	}
}
