package firecracker

import (
	"reflect"
	"testing"

	"github.com/firegopher/firegopher/internal/vmm"
)

func TestJailerArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  JailerConfig
		want []string
	}{
		{
			"defaults",
			JailerConfig{Binary: "jailer", UID: 123, GID: 100, ID: "vm-1"},
			[]string{"--id", "vm-1", "--exec-file", "/usr/bin/firecracker", "--uid", "123", "--gid", "100",
				"--chroot-base-dir", "/srv/jailer", "--", "--api-sock", "/firecracker.sock"},
		},
		{
			"netns and chroot base",
			JailerConfig{Binary: "jailer", UID: 0, GID: 0, ID: "a", ChrootBase: "/var/lib/fg/jail", NetNS: "/var/run/netns/fg0"},
			[]string{"--id", "a", "--exec-file", "/usr/bin/firecracker", "--uid", "0", "--gid", "0",
				"--chroot-base-dir", "/var/lib/fg/jail", "--netns", "/var/run/netns/fg0", "--", "--api-sock", "/firecracker.sock"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := JailerArgs(tc.cfg, "/usr/bin/firecracker")
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			for _, a := range got {
				if a == "--daemonize" {
					t.Error("--daemonize used")
				}
			}
		})
	}
}

func TestChrootFiles(t *testing.T) {
	cfg := JailerConfig{Binary: "jailer", ID: "vm1", ChrootBase: "/j"}
	root := "/j/firecracker/vm1/root"
	for _, tc := range []struct {
		name string
		spec vmm.Spec
		want map[string]string
	}{
		{
			"kernel initrd disks",
			vmm.Spec{
				Kernel: "/a/vmlinux-6.1", Initrd: "/a/init.cpio",
				Disks: []vmm.Disk{{Path: "/x/rootfs.img", Serial: "fgroot"}, {Path: "/y/rootfs.img", Serial: "fgdata"}},
			},
			map[string]string{
				"/a/vmlinux-6.1": root + "/vmlinux",
				"/a/init.cpio":   root + "/initrd",
				"/x/rootfs.img":  root + "/drive-fgroot",
				"/y/rootfs.img":  root + "/drive-fgdata",
			},
		},
		{
			"no initrd, unnamed disk",
			vmm.Spec{Kernel: "/k", Disks: []vmm.Disk{{Path: "/d"}}},
			map[string]string{"/k": root + "/vmlinux", "/d": root + "/drive0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ChrootFiles(cfg, tc.spec); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
	if got := ChrootDir(JailerConfig{ID: "x"}); got != "/srv/jailer/firecracker/x/root" {
		t.Errorf("default chroot dir %s", got)
	}
}

func TestJailerConfigValidate(t *testing.T) {
	ok := JailerConfig{Binary: "jailer", UID: 1, GID: 1, ID: "vm-1"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*JailerConfig){
		"no binary":     func(c *JailerConfig) { c.Binary = "" },
		"no id":         func(c *JailerConfig) { c.ID = "" },
		"bad id":        func(c *JailerConfig) { c.ID = "vm_1" },
		"long id":       func(c *JailerConfig) { c.ID = string(make([]byte, 65)) },
		"negative uid":  func(c *JailerConfig) { c.UID = -1 },
		"relative base": func(c *JailerConfig) { c.ChrootBase = "jail" },
	} {
		c := ok
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
