package spec

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// chdir makes dir the working directory for the rest of the test.
func chdir(t *testing.T, dir string) {
	t.Helper()
	old, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chdir(old) })
}

func TestParseVolume(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "site"), 0o755)
	chdir(t, dir)
	for in, want := range map[string]Volume{
		"data:/data":                        {Source: "data", Target: "/data"},
		"data:/data:rw":                     {Source: "data", Target: "/data"},
		"pg-15.main:/var/lib/postgresql:ro": {Source: "pg-15.main", Target: "/var/lib/postgresql", ReadOnly: true},
		"./site:/srv:ro":                    {Source: filepath.Join(dir, "site"), Target: "/srv", ReadOnly: true},
		// A host directory is read-only whether or not :ro is written.
		"./site:/srv":                        {Source: filepath.Join(dir, "site"), Target: "/srv", ReadOnly: true},
		filepath.Join(dir, "site") + ":/srv": {Source: filepath.Join(dir, "site"), Target: "/srv", ReadOnly: true},
	} {
		got, err := ParseVolume(in)
		if err != nil || got != want {
			t.Errorf("ParseVolume(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

func TestParseVolumeErrorsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "site"), 0o755)
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	chdir(t, dir)
	for in, want := range map[string]string{
		"data":                 `--volume: "data", want NAME:/GUEST/PATH[:ro]`,
		"data:/a:ro:x":         `--volume: "data:/a:ro:x", want`,
		":/data":               `--volume: ":/data", want`,
		"data:":                `--volume: "data:", want`,
		"data:/data:rx":        `--volume: "data:/data:rx": option "rx", want ro or rw`,
		"data:relative":        `--volume: guest path "relative" is not absolute`,
		"data:/a/../b":         `--volume: guest path "/a/../b" must be clean`,
		"data:/":               `--volume: guest path "/" must be clean and not /`,
		"data:/proc":           `--volume: guest path /proc: /proc belongs to the guest's kernel filesystems`,
		"data:/dev/shm":        `--volume: guest path /dev/shm: /dev belongs`,
		"Data:/data":           `--volume: "Data" is neither a volume name`,
		"my vol:/data":         `--volume: "my vol" is neither a volume name`,
		"./missing:/srv:ro":    `--volume: ./missing: no such directory`,
		"./file:/srv:ro":       `--volume: ./file: not a directory (--copy ships single files)`,
		"./site:/srv:rw":       `--volume: "./site:/srv:rw": a host directory is shipped as a read-only copy`,
		"./site:relative:ro":   `--volume: guest path "relative" is not absolute`,
		"/no/such/dir:/srv:ro": `--volume: /no/such/dir: no such directory`,
	} {
		if _, err := ParseVolume(in); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ParseVolume(%q) = %v; want an error starting %q", in, err, want)
		}
	}
}

func TestParseVolumesTogether(t *testing.T) {
	dir := t.TempDir()
	chdir(t, dir)
	for want, in := range map[string][]string{
		"--volume: two volumes on guest path /data": {"a:/data", "b:/data"},
		"--volume: two volumes on guest path /srv":  {"./:/srv", "a:/srv:ro"},
		"--volume: volume a is attached twice":      {"a:/x", "a:/y:ro"},
		"--volume: 17 volumes, at most 16":          strings.Fields(strings.Repeat("./:/x ", 17)),
	} {
		if want == "--volume: 17 volumes, at most 16" {
			for i := range in {
				in[i] = "./:/x" + strings.Repeat("x", i)
			}
		}
		if _, err := ParseVolumes(in); err == nil || err.Error() != want {
			t.Errorf("ParseVolumes(%q) = %v; want %q", in, err, want)
		}
	}
	// The same directory twice, and nested targets, are fine.
	got, err := ParseVolumes([]string{"./:/a", "./:/a/b", "data:/data"})
	if err != nil || len(got) != 3 {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestParseRunVolumes(t *testing.T) {
	f := validFlags()
	f.Volumes = []string{"data:/data", "cfg:/etc/app:ro"}
	m, err := ParseRun(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []Volume{{Source: "data", Target: "/data"}, {Source: "cfg", Target: "/etc/app", ReadOnly: true}}
	if !reflect.DeepEqual(m.Volumes, want) {
		t.Fatalf("volumes %+v, want %+v", m.Volumes, want)
	}
	f.Volumes = []string{"data:data"}
	if _, err := ParseRun(f); err == nil || !strings.HasPrefix(err.Error(), "--volume: ") {
		t.Fatalf("a relative guest path: %v", err)
	}
}

// A stored machine is checked again: a record edited by hand cannot attach a writable host
// directory, a bad name, or volumes to a machine without our init.
func TestValidateVolumes(t *testing.T) {
	base := func() *Machine {
		return &Machine{ID: NewID(), Mode: ModeApp, CPUs: 1, Memory: 512 * MiB, Process: Process{Cmd: []string{"true"}}}
	}
	for want, vols := range map[string][]Volume{
		"--volume: host directory /srv must be read-only":     {{Source: "/srv", Target: "/srv"}},
		`--volume: host directory "/srv/../x" is not a clean`: {{Source: "/srv/../x", Target: "/srv", ReadOnly: true}},
		`--volume: "../x" is not a volume name`:               {{Source: "../x", Target: "/x"}},
		`--volume: guest path "x" is not absolute`:            {{Source: "data", Target: "x"}},
	} {
		m := base()
		m.Volumes = vols
		if err := m.Validate(); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%+v: %v; want %q", vols, err, want)
		}
	}
	m := base()
	m.Mode, m.Process.Cmd = ModeForeign, nil
	n, err := ParseNet(NetFlags{Enabled: true, Pool: "172.16.0.0/16", DHCP: "embedded"})
	if err != nil {
		t.Fatal(err)
	}
	n.RunID, n.Slot = "r", "s"
	m.Network = n
	m.Volumes = []Volume{{Source: "data", Target: "/data"}}
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "no firegopher init to mount volumes") {
		t.Errorf("volumes on a foreign machine: %v", err)
	}
}

func TestSizeStringTiB(t *testing.T) {
	for s, want := range map[Size]string{16 << 40: "16T", 1 << 40: "1T", 1536 * GiB: "1536G", 0: "0G", 3 * MiB: "3M"} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", int64(s), got, want)
		}
	}
}
