package volume

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/spec"
)

// helperEnv makes the test binary a VM's stand-in: it attaches the volume named in
// "STATE:NAME:VM", prints "attached" and waits to be killed.
const helperEnv = "VOLUME_TEST_ATTACH"

func TestMain(m *testing.M) {
	if arg, ok := os.LookupEnv(helperEnv); ok {
		p := strings.SplitN(arg, ":", 3)
		if _, err := (&Store{Dir: p[0]}).Attach(p[1], p[2], false); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(2)
		}
		os.Stdout.WriteString("attached\n")
		select {}
	}
	os.Exit(m.Run())
}

func needMkfs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				t.Fatalf("%s not found: install e2fsprogs", tool)
			}
		}
	}
}

func newStore(t *testing.T) *Store {
	t.Helper()
	needMkfs(t)
	return &Store{Dir: filepath.Join(t.TempDir(), "volumes")}
}

func create(t *testing.T, s *Store, name string) *Volume {
	t.Helper()
	v, err := s.Create(context.Background(), name, 64*spec.MiB)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// debugfs runs a debugfs request against img read-only (no mount) and returns its output.
func debugfs(t *testing.T, img, request string) string {
	t.Helper()
	bin, err := exec.LookPath("debugfs")
	if err != nil {
		bin = "/usr/sbin/debugfs"
	}
	out, err := exec.Command(bin, "-R", request, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %q %s: %v\n%s", request, img, err, out)
	}
	return string(out)
}

func TestCreateMakesAnEmptySparseExt4(t *testing.T) {
	s := newStore(t)
	before := time.Now().Add(-time.Second)
	v := create(t, s, "data")
	if v.Name != "data" || v.Size != 64*spec.MiB || v.Disk != filepath.Join(s.Dir, "data", DiskFile) || len(v.Users) != 0 {
		t.Fatalf("got %+v", v)
	}
	if v.Created.Before(before) || v.Created.After(time.Now()) {
		t.Errorf("created %s, want about now", v.Created)
	}
	fi, err := os.Stat(v.Disk)
	if err != nil || fi.Size() != int64(64*spec.MiB) {
		t.Fatalf("disk: %v %v", fi, err)
	}
	if v.Allocated <= 0 || v.Allocated >= fi.Size()/2 {
		t.Errorf("allocated %d of %d bytes: want a sparse file", v.Allocated, fi.Size())
	}
	// The ext4 superblock's magic at 1024+56, and the label at 1024+120.
	sb := make([]byte, 2048)
	f, _ := os.Open(v.Disk)
	f.ReadAt(sb, 0)
	f.Close()
	if binary.LittleEndian.Uint16(sb[1024+56:]) != 0xEF53 {
		t.Fatal("no ext4 superblock")
	}
	if label := strings.TrimRight(string(sb[1024+120:1024+136]), "\x00"); label != fsLabel {
		t.Errorf("label %q, want %q", label, fsLabel)
	}
	ls := debugfs(t, v.Disk, "ls -l /")
	if !strings.Contains(ls, "lost+found") || strings.Contains(ls, "empty") {
		t.Errorf("root of a new volume:\n%s", ls)
	}
	if entries, _ := os.ReadDir(s.Dir); len(entries) != 1 {
		t.Errorf("volumes dir holds %v, want only data", entries)
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	s := newStore(t)
	create(t, s, "data")
	for _, tt := range []struct {
		name string
		size spec.Size
		want string
	}{
		{"Data", spec.GiB, "volume name: \"Data\", want lowercase"},
		{"a/b", spec.GiB, "volume name: \"a/b\""},
		{"../x", spec.GiB, "volume name: \"../x\""},
		{"", spec.GiB, "volume name: \"\""},
		{"small", spec.MiB, "--size: 1M, want 16M to 16T"},
		{"huge", 32 << 40, "--size:"},
		{"data", spec.GiB, "volume \"data\" already exists"},
	} {
		if _, err := s.Create(context.Background(), tt.name, tt.size); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Create(%q, %s) = %v, want an error containing %q", tt.name, tt.size, err, tt.want)
		}
	}
	vols, err := s.List()
	if err != nil || len(vols) != 1 || vols[0].Name != "data" {
		t.Fatalf("List = %+v, %v; want only data", vols, err)
	}
}

func TestCreateInterruptedLeavesNothing(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Create(ctx, "data", spec.GiB); !errors.Is(err, context.Canceled) {
		t.Fatalf("Create(cancelled) = %v", err)
	}
	if entries, _ := os.ReadDir(s.Dir); len(entries) != 0 {
		t.Fatalf("left %v", entries)
	}
	if _, err := s.Inspect("data"); err == nil {
		t.Fatal("a volume exists after a failed create")
	}
}

func TestListAndRemove(t *testing.T) {
	s := newStore(t)
	if vols, err := s.List(); err != nil || len(vols) != 0 {
		t.Fatalf("List of a state dir without volumes = %v, %v", vols, err)
	}
	create(t, s, "b")
	create(t, s, "a")
	os.MkdirAll(filepath.Join(s.Dir, ".new-c-123"), 0o700) // debris: not a volume
	vols, err := s.List()
	if err != nil || len(vols) != 2 || vols[0].Name != "a" || vols[1].Name != "b" {
		t.Fatalf("List = %+v, %v", vols, err)
	}
	if err := s.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("removed volume's directory: %v", err)
	}
	for _, err := range []error{s.Remove("a"), func() error { _, err := s.Inspect("a"); return err }()} {
		if err == nil || !strings.Contains(err.Error(), `no volume named "a" (make it with: firegopher volume create a)`) {
			t.Errorf("after removal: %v", err)
		}
	}
	if err := s.Remove("A"); err == nil || !strings.Contains(err.Error(), "want lowercase") {
		t.Errorf("Remove(bad name) = %v", err)
	}
}

func TestAttachReadWriteIsExclusive(t *testing.T) {
	s := newStore(t)
	create(t, s, "data")
	a, err := s.Attach("data", "aaaaaaaaaaaa", false)
	if err != nil {
		t.Fatal(err)
	}
	if a.Disk != s.DiskPath("data") || a.ReadOnly {
		t.Fatalf("attachment %+v", a)
	}
	v, _ := s.Inspect("data")
	if len(v.Users) != 1 || v.Users[0] != (User{VM: "aaaaaaaaaaaa"}) {
		t.Fatalf("users %+v", v.Users)
	}
	const named = `volume "data" is in use: attached to running VM aaaaaaaaaaaa (read-write)`
	for _, ro := range []bool{false, true} {
		if _, err := s.Attach("data", "bbbbbbbbbbbb", ro); !errors.Is(err, ErrInUse) || err.Error() != named {
			t.Errorf("second attach (read-only %v) = %v, want %q", ro, err, named)
		}
	}
	if err := s.Remove("data"); !errors.Is(err, ErrInUse) || err.Error() != named+"; stop it first" {
		t.Errorf("Remove while attached = %v", err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Inspect("data"); len(v.Users) != 0 {
		t.Fatalf("users after release: %+v", v.Users)
	}
	b, err := s.Attach("data", "bbbbbbbbbbbb", false)
	if err != nil {
		t.Fatalf("attach after release: %v", err)
	}
	b.Release()
	if err := s.Remove("data"); err != nil {
		t.Fatalf("Remove after release: %v", err)
	}
}

func TestAttachReadOnlyIsShared(t *testing.T) {
	s := newStore(t)
	create(t, s, "data")
	r1, err := s.Attach("data", "aaaaaaaaaaaa", true)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Attach("data", "bbbbbbbbbbbb", true)
	if err != nil {
		t.Fatalf("a second reader: %v", err)
	}
	v, _ := s.Inspect("data")
	if len(v.Users) != 2 || !v.Users[0].ReadOnly || !v.Users[1].ReadOnly {
		t.Fatalf("users %+v", v.Users)
	}
	if _, err := s.Attach("data", "cccccccccccc", false); !errors.Is(err, ErrInUse) ||
		!strings.Contains(err.Error(), "VM aaaaaaaaaaaa (read-only), VM bbbbbbbbbbbb (read-only)") {
		t.Errorf("a writer among readers = %v", err)
	}
	r1.Release()
	if _, err := s.Attach("data", "cccccccccccc", false); !errors.Is(err, ErrInUse) {
		t.Errorf("a writer beside one reader = %v", err)
	}
	r2.Release()
	w, err := s.Attach("data", "cccccccccccc", false)
	if err != nil {
		t.Fatalf("a writer once the readers are gone: %v", err)
	}
	w.Release()
}

func TestAttachMissingVolume(t *testing.T) {
	s := newStore(t)
	if _, err := s.Attach("nope", "aaaaaaaaaaaa", false); err == nil || !strings.Contains(err.Error(), `no volume named "nope"`) {
		t.Fatalf("got %v", err)
	}
	if _, err := s.Attach("No", "aaaaaaaaaaaa", false); err == nil || !strings.Contains(err.Error(), "want lowercase") {
		t.Fatalf("got %v", err)
	}
	if entries, _ := os.ReadDir(s.Dir); len(entries) != 0 {
		t.Fatalf("attach of a missing volume made %v", entries)
	}
}

// A holder that dies, however it dies, leaves the volume free: no gc is needed.
func TestHolderKilledReleasesVolume(t *testing.T) {
	s := newStore(t)
	create(t, s, "data")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+s.Dir+":data:aaaaaaaaaaaa")
	cmd.Stderr = os.Stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "attached\n" {
		t.Fatalf("helper: %q %v", line, err)
	}
	if _, err := s.Attach("data", "bbbbbbbbbbbb", false); err == nil || !strings.Contains(err.Error(), "VM aaaaaaaaaaaa (read-write)") {
		t.Fatalf("attach while another process holds it: %v", err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if v, _ := s.Inspect("data"); len(v.Users) != 0 {
		t.Fatalf("users after the holder died: %+v", v.Users)
	}
	a, err := s.Attach("data", "bbbbbbbbbbbb", false)
	if err != nil {
		t.Fatalf("attach after the holder died: %v", err)
	}
	a.Release()
	if err := s.Remove("data"); err != nil {
		t.Fatal(err)
	}
}

func TestCleanRemovesDebrisOnly(t *testing.T) {
	s := newStore(t)
	create(t, s, "data")
	create(t, s, "busy")
	old := time.Now().Add(-2 * debrisGrace)
	for _, d := range []string{".new-x-1", ".rm-y-2/y", ".new-fresh-3"} {
		os.MkdirAll(filepath.Join(s.Dir, d), 0o700)
	}
	os.Chtimes(filepath.Join(s.Dir, ".new-x-1"), old, old)
	os.Chtimes(filepath.Join(s.Dir, ".rm-y-2"), old, old)
	// A dead holder's users entry, and a live one's.
	os.MkdirAll(filepath.Join(s.Dir, "data", UsersDir), 0o700)
	os.WriteFile(filepath.Join(s.Dir, "data", UsersDir, "aaaaaaaaaaaa"), []byte("rw\n"), 0o600)
	a, err := s.Attach("busy", "bbbbbbbbbbbb", false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	report := s.Clean()
	if len(report) != 3 {
		t.Errorf("report %q, want 3 lines", report)
	}
	var left []string
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != ".new-fresh-3 busy data" {
		t.Errorf("left %v", left)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "data", UsersDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dead holder's entry: %v", err)
	}
	if v, _ := s.Inspect("busy"); len(v.Users) != 1 {
		t.Errorf("live holder's entry removed: %+v", v.Users)
	}
}

func TestBuildReadOnly(t *testing.T) {
	needMkfs(t)
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "hello.txt"), []byte("hello\n"), 0o640)
	os.Symlink("sub/hello.txt", filepath.Join(src, "link"))
	out := filepath.Join(t.TempDir(), "volume0.ext4")
	if err := BuildReadOnly(context.Background(), src, out); err != nil {
		t.Fatal(err)
	}
	if got := debugfs(t, out, "cat /sub/hello.txt"); !strings.Contains(got, "hello\n") {
		t.Errorf("cat /sub/hello.txt: %q", got)
	}
	if got := debugfs(t, out, "stat /link"); !strings.Contains(got, `Fast link dest: "sub/hello.txt"`) {
		t.Errorf("stat /link:\n%s", got)
	}
	if got := debugfs(t, out, "stat /sub/hello.txt"); !strings.Contains(got, "Mode:  0640") {
		t.Errorf("stat /sub/hello.txt:\n%s", got)
	}
	notDir := filepath.Join(src, "sub", "hello.txt")
	for _, bad := range []string{filepath.Join(src, "missing"), notDir} {
		out := filepath.Join(t.TempDir(), "v.ext4")
		if err := BuildReadOnly(context.Background(), bad, out); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("BuildReadOnly(%s) = %v", bad, err)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("BuildReadOnly(%s) left %s", bad, out)
		}
	}
}
