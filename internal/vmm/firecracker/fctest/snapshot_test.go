//go:build linux

package fctest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// snap is a snapshot written by a microVM of one release, and the files it names.
type snap struct {
	state, mem, drive, vsock string
}

// takeSnapshot boots a microVM of version with a drive and a vsock device, pauses it
// and snapshots it into its directory.
func takeSnapshot(t *testing.T, version string) snap {
	t.Helper()
	c := newClient(t, version)
	s := snap{
		state: filepath.Join(c.dir, "state"), mem: filepath.Join(c.dir, "mem"),
		drive: c.file("rootfs"), vsock: filepath.Join(c.dir, "v.sock"),
	}
	c.must("PUT", "/drives/root", `{"drive_id":"root","path_on_host":"`+s.drive+`","is_root_device":false,"is_read_only":false}`)
	c.must("PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+s.vsock+`"}`)
	c.boot()
	c.must("PATCH", "/vm", `{"state":"Paused"}`)
	c.must("PUT", "/snapshot/create", `{"snapshot_type":"Full","snapshot_path":"`+s.state+`","mem_file_path":"`+s.mem+`"}`)
	// The source's listener keeps its socket open; its path is free for a restore.
	os.Remove(s.vsock)
	return s
}

func (s snap) load(extra string) string {
	return `{"snapshot_path":"` + s.state + `","mem_backend":{"backend_type":"File","backend_path":"` + s.mem + `"}` + extra + `}`
}

// describe is a result, or after a success the state GET / reports.
func (c *client) describe(code int, msg string) (int, string) {
	if code == 204 {
		return code, c.must("GET", "/", "")
	}
	return code, msg
}

func (c *client) loadFailed() bool {
	select {
	case <-c.srv.loadFailed:
		return true
	default:
		return false
	}
}

// TestSnapshotSequences: which snapshot calls each release allows in which state, and
// what a load checks. A load that fails past the body's checks ends the process.
func TestSnapshotSequences(t *testing.T) {
	type want struct {
		code int
		msg  string // part of the fault, or of GET / after a success
	}
	paused, running := want{204, `"state":"Paused"`}, want{204, `"state":"Running"`}
	for _, tc := range []struct {
		name     string
		run      func(c *client, s snap) (int, string)
		v16, v11 want
		exits    bool // the process ends (a failed load)
	}{
		{"load on a fresh process stays paused", func(c *client, s snap) (int, string) {
			return c.describe(c.do("PUT", "/snapshot/load", s.load("")))
		}, paused, paused, false},
		{"load with resume_vm runs", func(c *client, s snap) (int, string) {
			return c.describe(c.do("PUT", "/snapshot/load", s.load(`,"resume_vm":true`)))
		}, running, running, false},
		{"load then resume", func(c *client, s snap) (int, string) {
			c.must("PUT", "/snapshot/load", s.load(""))
			return c.describe(c.do("PATCH", "/vm", `{"state":"Resumed"}`))
		}, running, running, false},
		{"load with the deprecated mem_file_path", func(c *client, s snap) (int, string) {
			return c.describe(c.do("PUT", "/snapshot/load", `{"snapshot_path":"`+s.state+`","mem_file_path":"`+s.mem+`"}`))
		}, paused, paused, false},
		{"logger before load", func(c *client, s snap) (int, string) {
			c.must("PUT", "/logger", `{"log_path":"`+c.file("fc.log")+`"}`)
			return c.describe(c.do("PUT", "/snapshot/load", s.load("")))
		}, paused, paused, false},
		{"load after machine-config", func(c *client, s snap) (int, string) {
			c.must("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`)
			return c.do("PUT", "/snapshot/load", s.load(""))
		}, want{400, msgLoadAfterSetup}, want{400, msgLoadAfterSetup}, false},
		{"load after InstanceStart", func(c *client, s snap) (int, string) {
			c.boot()
			return c.do("PUT", "/snapshot/load", s.load(""))
		}, want{400, msgPostBoot}, want{400, msgPostBoot}, false},
		{"second load", func(c *client, s snap) (int, string) {
			c.must("PUT", "/snapshot/load", s.load(""))
			return c.do("PUT", "/snapshot/load", s.load(""))
		}, want{400, msgPostBoot}, want{400, msgPostBoot}, false},
		{"InstanceStart after load", func(c *client, s snap) (int, string) {
			c.must("PUT", "/snapshot/load", s.load(""))
			return c.do("PUT", "/actions", `{"action_type":"InstanceStart"}`)
		}, want{400, msgPostBoot}, want{400, msgPostBoot}, false},
		{"boot-source after load", func(c *client, s snap) (int, string) {
			c.must("PUT", "/snapshot/load", s.load(""))
			return c.do("PUT", "/boot-source", `{"kernel_image_path":"`+c.file("vmlinux")+`"}`)
		}, want{400, msgPostBoot}, want{400, msgPostBoot}, false},
		{"snapshot of a loaded microVM", func(c *client, s snap) (int, string) {
			c.must("PUT", "/snapshot/load", s.load(""))
			return c.do("PUT", "/snapshot/create", `{"snapshot_path":"`+filepath.Join(c.dir, "s2")+`","mem_file_path":"`+filepath.Join(c.dir, "m2")+`"}`)
		}, want{204, ""}, want{204, ""}, false},
		{"Diff snapshot without dirty page tracking", func(c *client, s snap) (int, string) {
			c.boot()
			c.must("PATCH", "/vm", `{"state":"Paused"}`)
			return c.do("PUT", "/snapshot/create", `{"snapshot_type":"Diff","snapshot_path":"`+filepath.Join(c.dir, "s2")+`","mem_file_path":"`+filepath.Join(c.dir, "m2")+`"}`)
		}, want{400, "track_dirty_pages"}, want{400, "track_dirty_pages"}, false},
		{"load with both memory fields", func(c *client, s snap) (int, string) {
			return c.do("PUT", "/snapshot/load", s.load(`,"mem_file_path":"`+s.mem+`"`))
		}, want{400, msgMemExactlyOne}, want{400, msgMemExactlyOne}, false},
		{"load with no memory", func(c *client, s snap) (int, string) {
			return c.do("PUT", "/snapshot/load", `{"snapshot_path":"`+s.state+`"}`)
		}, want{400, msgMemExactlyOne}, want{400, msgMemExactlyOne}, false},
		{"load with an unknown field", func(c *client, s snap) (int, string) {
			return c.do("PUT", "/snapshot/load", s.load(`,"version":"1.6.0"`))
		}, want{400, "unknown field `version`"}, want{400, "unknown field `version`"}, false},
		{"load with track_dirty_pages (1.16 only)", func(c *client, s snap) (int, string) {
			return c.describe(c.do("PUT", "/snapshot/load", s.load(`,"track_dirty_pages":true`)))
		}, want{400, "unknown field `track_dirty_pages`"}, paused, false},
		{"load with a vsock override (1.16 only)", func(c *client, s snap) (int, string) {
			return c.describe(c.do("PUT", "/snapshot/load", s.load(`,"vsock_override":{"uds_path":"`+filepath.Join(c.dir, "other.sock")+`"}`)))
		}, want{400, "unknown field `vsock_override`"}, paused, false},
		{"load with an override of a NIC the snapshot lacks (1.16 only)", func(c *client, s snap) (int, string) {
			return c.do("PUT", "/snapshot/load", s.load(`,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap0"}]`))
		}, want{400, "unknown field `network_overrides`"}, want{400, "no interface eth0"}, true},
		{"load of a missing snapshot file", func(c *client, s snap) (int, string) {
			os.Remove(s.state)
			return c.do("PUT", "/snapshot/load", s.load(""))
		}, want{400, "Cannot open the snapshot file: No such file or directory"}, want{400, "Cannot open the snapshot file"}, true},
		{"load with another snapshot's memory", func(c *client, s snap) (int, string) {
			os.WriteFile(s.mem, []byte(memoryHeader+"0000\n"), 0o600)
			return c.do("PUT", "/snapshot/load", s.load(""))
		}, want{400, "is not the memory of"}, want{400, "is not the memory of"}, true},
		{"load without the drive's file", func(c *client, s snap) (int, string) {
			os.Remove(s.drive)
			return c.do("PUT", "/snapshot/load", s.load(""))
		}, want{400, "BackingFile(No such file or directory"}, want{400, "BackingFile"}, true},
		{"load while the vsock path is taken", func(c *client, s snap) (int, string) {
			c.must("PUT", "/logger", `{"log_path":"`+c.file("fc.log")+`"}`) // any file will do
			os.Rename(filepath.Join(c.dir, "fc.log"), s.vsock)
			return c.do("PUT", "/snapshot/load", s.load(""))
		}, want{400, "UnixBind(Address already in use"}, want{400, "UnixBind"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range Versions {
				t.Run(SubtestName(v), func(t *testing.T) {
					w := tc.v16
					if v == "1.16.1" {
						w = tc.v11
					}
					c := newClient(t, v)
					code, msg := tc.run(c, takeSnapshot(t, v))
					if code != w.code || !strings.Contains(msg, w.msg) {
						t.Errorf("got %d %q, want %d with %q", code, msg, w.code, w.msg)
					}
					// A body the schema refuses never reaches the load.
					exits := tc.exits && !strings.Contains(w.msg, "unknown field")
					if got := c.loadFailed(); got != exits {
						t.Errorf("process ends: %v, want %v", got, exits)
					}
				})
			}
		})
	}
}

// TestSnapshotOfAnotherRelease: a snapshot loads only on the release that wrote it.
func TestSnapshotOfAnotherRelease(t *testing.T) {
	s := takeSnapshot(t, Versions[0])
	c := newClient(t, Versions[1])
	code, msg := c.do("PUT", "/snapshot/load", s.load(""))
	if code != 400 || !strings.Contains(msg, "Invalid snapshot version") || !c.loadFailed() {
		t.Errorf("got %d %q (process ends: %v), want a version error that ends it", code, msg, c.loadFailed())
	}
}

// TestSnapshotRestoresTheDevices: the loaded microVM has the snapshot's drives (opened
// again, with their mode), its vsock bound at its path, and a guest that resumes from
// the snapshot, not one that boots.
func TestSnapshotRestoresTheDevices(t *testing.T) {
	for _, v := range Versions {
		t.Run(SubtestName(v), func(t *testing.T) {
			s := takeSnapshot(t, v)
			c := newClient(t, v)
			c.must("PUT", "/snapshot/load", s.load(""))
			if _, err := os.Stat(s.vsock); err != nil {
				t.Errorf("vsock socket: %v", err)
			}
			c.srv.mu.Lock()
			defer c.srv.mu.Unlock()
			g := c.srv.restored
			switch {
			case g == nil || !g.Restored:
				t.Fatalf("restored guest: %+v", g)
			case len(g.Drives) != 1 || g.Drives[0].Path != s.drive || g.Drives[0].ReadOnly:
				t.Errorf("drives %+v, want %s read-write", g.Drives, s.drive)
			case g.Vsock != s.vsock:
				t.Errorf("vsock %q, want %q", g.Vsock, s.vsock)
			case c.srv.drives[0].f == nil:
				t.Errorf("the drive was not opened")
			}
			select {
			case <-c.srv.resumed:
				t.Errorf("the guest runs before the microVM is resumed")
			default:
			}
		})
	}
}
