//go:build linux

package guest

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

type mountCall struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// fakeMounts records mount calls and answers each with the next of errs (nil when none).
type fakeMounts struct {
	calls []mountCall
	errs  []error
}

func (f *fakeMounts) mount(source, target, fstype string, flags uintptr, data string) error {
	f.calls = append(f.calls, mountCall{source, target, fstype, flags, data})
	if len(f.errs) == 0 {
		return nil
	}
	err := f.errs[0]
	f.errs = f.errs[1:]
	return err
}

// bySerial finds disks vol0, vol1... as /dev/vdb, /dev/vdc...
func bySerial(d vmconfig.Disk) (string, error) {
	if !strings.HasPrefix(d.Serial, "vol") {
		return "", fmt.Errorf("no disk with serial %s appeared", d.Serial)
	}
	return "/dev/vd" + string(rune('b'+d.Serial[3]-'0')), nil
}

func vol(serial, target string, ro bool) vmconfig.Mount {
	return vmconfig.Mount{Disk: vmconfig.Disk{Serial: serial, FSType: "ext4"}, Target: target, ReadOnly: ro}
}

func TestMountVolumesParentsFirstCreatingTargets(t *testing.T) {
	root := t.TempDir()
	f := &fakeMounts{}
	mounts := []vmconfig.Mount{vol("vol0", "/data/cache", false), vol("vol1", "/srv", true), vol("vol2", "/data", false)}
	if err := mountVolumes(root, mounts, bySerial, f.mount, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	want := []mountCall{
		{"/dev/vdc", filepath.Join(root, "srv"), "ext4", unix.MS_RDONLY, ""},
		{"/dev/vdd", filepath.Join(root, "data"), "ext4", 0, ""},
		{"/dev/vdb", filepath.Join(root, "data/cache"), "ext4", 0, ""},
	}
	if !reflect.DeepEqual(f.calls, want) {
		t.Errorf("mounts\n got %+v\nwant %+v", f.calls, want)
	}
	for _, d := range []string{"srv", "data/cache"} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() {
			t.Errorf("target %s not created: %v", d, err)
		}
	}
}

// A read-only volume whose journal needs replaying cannot replay on a read-only disk: it is
// mounted without the replay. A writable one that fails is an error.
func TestMountVolumesReadOnlyDirtyJournal(t *testing.T) {
	f := &fakeMounts{errs: []error{unix.EROFS}}
	if err := mountVolumes(t.TempDir(), []vmconfig.Mount{vol("vol0", "/srv", true)}, bySerial, f.mount, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 2 || f.calls[1].data != "noload" || f.calls[1].flags != unix.MS_RDONLY {
		t.Errorf("calls %+v, want a retry with noload", f.calls)
	}
	f = &fakeMounts{errs: []error{unix.EROFS}}
	err := mountVolumes(t.TempDir(), []vmconfig.Mount{vol("vol0", "/data", false)}, bySerial, f.mount, slog.New(slog.DiscardHandler))
	if !errors.Is(err, unix.EROFS) || !strings.Contains(err.Error(), "volume /data: mount /dev/vdb (ext4)") || len(f.calls) != 1 {
		t.Errorf("writable volume on a read-only disk: %v, calls %+v", err, f.calls)
	}
}

func TestMountVolumesErrorsNameTheVolume(t *testing.T) {
	f := &fakeMounts{}
	err := mountVolumes(t.TempDir(), []vmconfig.Mount{vol("vol0", "/a", false), vol("root9", "/b", false)}, bySerial, f.mount, slog.New(slog.DiscardHandler))
	if err == nil || err.Error() != "volume /b: no disk with serial root9 appeared" {
		t.Errorf("got %v", err)
	}
	f = &fakeMounts{errs: []error{unix.EINVAL}}
	err = mountVolumes(t.TempDir(), []vmconfig.Mount{vol("vol0", "/a", false)}, bySerial, f.mount, slog.New(slog.DiscardHandler))
	if err == nil || !strings.HasPrefix(err.Error(), "volume /a: mount /dev/vdb (ext4): ") {
		t.Errorf("got %v", err)
	}
}

func TestVolumeTargets(t *testing.T) {
	table := filepath.Join(t.TempDir(), "mounts")
	os.WriteFile(table, []byte(`/dev/vda / ext4 rw,relatime 0 0
devtmpfs /dev devtmpfs rw,nosuid 0 0
proc /proc proc rw 0 0
/dev/vdb /data ext4 rw,relatime 0 0
tmp /tmp tmpfs rw 0 0
/dev/vdc /srv/my\040site ext4 ro,relatime 0 0
/dev/vdd /data/cache ext4 rw 0 0
`), 0o644)
	want := []string{"/data", "/srv/my site", "/data/cache"}
	if got := volumeTargets(table); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := volumeTargets(filepath.Join(t.TempDir(), "missing")); got != nil {
		t.Errorf("missing table: %q", got)
	}
}
