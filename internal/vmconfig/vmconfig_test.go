package vmconfig

import (
	"os"
	"strings"
	"testing"
)

func valid() Config {
	return Config{Version: Version, Mode: ModeApp, Hostname: "vm", Root: Disk{Serial: "root", FSType: "ext4"}, Cmd: []string{"true"}}
}

func TestRoundTrip(t *testing.T) {
	c := valid()
	c.Env = []string{"A=1", "B="}
	c.WorkDir = "/srv"
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.WorkDir != "/srv" || len(got.Env) != 2 || got.Cmd[0] != "true" {
		t.Fatalf("round trip changed the config: %+v", got)
	}
}

func TestRootDiskBySerialOrIndex(t *testing.T) {
	for _, tc := range []struct {
		json string
		want Disk
	}{
		{`{"serial":"root","fstype":"ext4"}`, Disk{Serial: "root", FSType: "ext4"}},
		{`{"serial":"12345678901234567890","fstype":"ext4"}`, Disk{Serial: "12345678901234567890", FSType: "ext4"}},
		{`{"index":1,"fstype":"ext4"}`, Disk{Index: 1, FSType: "ext4"}},
		{`{"fstype":"ext4"}`, Disk{FSType: "ext4"}},
	} {
		c, err := Parse([]byte(`{"version":1,"mode":"app","cmd":["true"],"root":` + tc.json + `}`))
		if err != nil || c.Root != tc.want {
			t.Errorf("%s: got %+v %v, want %+v", tc.json, c, err, tc.want)
		}
	}
}

func TestParseNamesTheBadField(t *testing.T) {
	for name, tc := range map[string]struct{ json, want string }{
		"version":  {`{"version":2,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"]}`, "version 2"},
		"mode":     {`{"version":1,"mode":"vm","root":{"serial":"root","fstype":"ext4"},"cmd":["true"]}`, "mode"},
		"cmd":      {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"}}`, "cmd"},
		"serial":   {`{"version":1,"mode":"app","root":{"serial":"123456789012345678901","fstype":"ext4"},"cmd":["true"]}`, "root.serial"},
		"index":    {`{"version":1,"mode":"app","root":{"index":-1,"fstype":"ext4"},"cmd":["true"]}`, "root.index"},
		"fstype":   {`{"version":1,"mode":"app","root":{"serial":"root"},"cmd":["true"]}`, "root.fstype"},
		"env":      {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"env":["NOEQUALS"]}`, "env"},
		"workdir":  {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"workdir":"rel"}`, "workdir"},
		"unknown":  {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"surprise":1}`, "surprise"},
		"trailing": {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"]} {}`, "trailing"},
		"garbage":  {`not json`, "config"},
		"rlimit":   {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"rlimits":[{"resource":"cpu","soft":1,"hard":1}]}`, "rlimits"},
		"file":     {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"files":[{"path":"../x","mode":420}]}`, "files"},
		"mac":      {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"network":{"mac":"zz","address":"10.0.0.2/30"}}`, "network.mac"},
		"address":  {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"network":{"mac":"02:00:00:00:00:01","address":"10.0.0.2"}}`, "network.address"},
		"machine":  {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"machine_id":"ABC"}`, "machine_id"},
		"entropy":  {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"fresh":{"entropy":"AAAA","unix_nano":1}}`, "fresh.entropy"},
		"clock":    {`{"version":1,"mode":"app","root":{"serial":"root","fstype":"ext4"},"cmd":["true"],"fresh":{"entropy":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","unix_nano":0}}`, "fresh.unix_nano"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	b, _ := func() ([]byte, error) { c := valid(); return c.Marshal() }()
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must be valid and survive a round trip.
		again, err := c.Marshal()
		if err != nil {
			t.Fatalf("parsed config does not marshal: %v", err)
		}
		if _, err := Parse(again); err != nil {
			t.Fatalf("marshalled config does not parse: %v", err)
		}
	})
}

func TestLoadNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir + "/missing.json"); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("got %v", err)
	}
	c := valid()
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/config.json", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(dir + "/config.json"); err != nil || got.Hostname != "vm" {
		t.Fatalf("got %+v %v", got, err)
	}
}

func TestMounts(t *testing.T) {
	c := valid()
	c.Mounts = []Mount{
		{Disk: Disk{Serial: "vol0", FSType: "ext4"}, Target: "/data"},
		{Disk: Disk{Serial: "vol1", FSType: "ext4"}, Target: "/srv", ReadOnly: true},
	}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil || len(got.Mounts) != 2 || got.Mounts[1] != c.Mounts[1] {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// By position where the VMM sets no serials: the root is disk 0.
	byIndex := valid()
	byIndex.Root = Disk{FSType: "ext4"}
	byIndex.Mounts = []Mount{{Disk: Disk{Index: 1, FSType: "ext4"}, Target: "/data"}}
	if err := byIndex.Validate(); err != nil {
		t.Fatal(err)
	}
	for want, mounts := range map[string][]Mount{
		`mounts: target "data" must be absolute`:           {{Disk: Disk{Serial: "vol0", FSType: "ext4"}, Target: "data"}},
		`mounts: target "/" must be absolute`:              {{Disk: Disk{Serial: "vol0", FSType: "ext4"}, Target: "/"}},
		`mounts: target "/a/../b" must be absolute`:        {{Disk: Disk{Serial: "vol0", FSType: "ext4"}, Target: "/a/../b"}},
		"mounts: /data: fstype: empty":                     {{Disk: Disk{Serial: "vol0"}, Target: "/data"}},
		"mounts: /data: serial":                            {{Disk: Disk{Serial: strings.Repeat("v", 21), FSType: "ext4"}, Target: "/data"}},
		"mounts: /data: index -1 is negative":              {{Disk: Disk{Index: -1, FSType: "ext4"}, Target: "/data"}},
		`mounts: /data: its disk (serial "root", index 0)`: {{Disk: Disk{Serial: "root", FSType: "ext4"}, Target: "/data"}},
		"mounts: two mounts on /data": {
			{Disk: Disk{Serial: "vol0", FSType: "ext4"}, Target: "/data"},
			{Disk: Disk{Serial: "vol1", FSType: "ext4"}, Target: "/data"}},
		`mounts: /b: its disk (serial "vol0", index 0) is the root's or another mount's`: {
			{Disk: Disk{Serial: "vol0", FSType: "ext4"}, Target: "/a"},
			{Disk: Disk{Serial: "vol0", FSType: "ext4"}, Target: "/b"}},
	} {
		c := valid()
		c.Mounts = mounts
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "config: "+want) {
			t.Errorf("%+v: %v, want %q", mounts, err, want)
		}
	}
	byIndex.Mounts[0].Disk.Index = 0
	if err := byIndex.Validate(); err == nil || !strings.Contains(err.Error(), "the root's") {
		t.Errorf("a mount of the root disk by index: %v", err)
	}
}
