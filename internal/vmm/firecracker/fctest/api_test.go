package fctest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// client talks to one in-process Server over a Unix socket, as a backend would.
type client struct {
	t   *testing.T
	srv *Server
	hc  *http.Client
	dir string
}

func newClient(t *testing.T, version string) *client {
	t.Helper()
	prof, err := NewProfile(version)
	if err != nil {
		t.Fatal(err)
	}
	api, err := LoadAPI(version)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	srv := NewServer(prof, api, "t1", &log)
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, srv: srv, hc: &http.Client{Transport: tr}, dir: dir}
}

// do sends a request and returns the status and the fault message (or the body).
func (c *client) do(method, path, body string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var f struct {
		FaultMessage string `json:"fault_message"`
	}
	if json.Unmarshal(b, &f) == nil && f.FaultMessage != "" {
		return resp.StatusCode, f.FaultMessage
	}
	return resp.StatusCode, string(b)
}

func (c *client) must(method, path, body string) string {
	c.t.Helper()
	code, msg := c.do(method, path, body)
	if code/100 != 2 {
		c.t.Fatalf("%s %s %s: %d %s", method, path, body, code, msg)
	}
	return msg
}

// file makes a file in the client's directory.
func (c *client) file(name string) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *client) boot() {
	c.t.Helper()
	c.must("PUT", "/boot-source", `{"kernel_image_path":"`+c.file("vmlinux")+`"}`)
	c.must("PUT", "/actions", `{"action_type":"InstanceStart"}`)
}

// TestProbes are the probe rows of FACTS.md §7: what real Firecracker answers, per release.
func TestProbes(t *testing.T) {
	type want struct {
		code int
		msg  string // a part of the fault message ("" for success)
	}
	ok := want{204, ""}
	for _, tc := range []struct {
		name string
		// run returns the status and message of the probed request.
		run      func(c *client) (int, string)
		v16, v11 want // 1.6.0, 1.16.1
	}{
		{
			"boot-source with a missing kernel",
			func(c *client) (int, string) {
				return c.do("PUT", "/boot-source", `{"kernel_image_path":"/nonexistent/vmlinux"}`)
			},
			want{400, "The kernel file cannot be opened: No such file or directory (os error 2)"},
			want{400, "The kernel file cannot be opened"},
		},
		{
			"drive without is_read_only",
			func(c *client) (int, string) {
				return c.do("PUT", "/drives/root", `{"drive_id":"root","path_on_host":"`+c.file("rootfs")+`","is_root_device":false}`)
			},
			ok, ok,
		},
		{
			"machine-config with huge_pages",
			func(c *client) (int, string) {
				return c.do("PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256,"huge_pages":"None"}`)
			},
			want{400, "unknown field `huge_pages`"}, ok,
		},
		{
			"network interface with mtu and a missing TAP",
			func(c *client) (int, string) {
				return c.do("PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"fctestnotap0","mtu":1400}`)
			},
			want{400, "unknown field `mtu`"},
			want{400, "Open tap device failed"},
		},
		{
			"logger to an absent file",
			func(c *client) (int, string) {
				return c.do("PUT", "/logger", `{"log_path":"`+filepath.Join(c.dir, "fc.log")+`","level":"Info"}`)
			},
			// 1.6 opens without O_CREAT; 1.16 creates.
			want{400, "No such file or directory"}, ok,
		},
		{
			"logger to a FIFO",
			func(c *client) (int, string) {
				fifo := filepath.Join(c.dir, "logs.fifo")
				if err := mkfifo(fifo); err != nil {
					c.t.Fatal(err)
				}
				return c.do("PUT", "/logger", `{"log_path":"`+fifo+`"}`)
			},
			ok, ok,
		},
		{
			"metrics",
			func(c *client) (int, string) {
				return c.do("PUT", "/metrics", `{"metrics_path":"`+c.file("metrics")+`"}`)
			},
			ok, ok,
		},
		{
			"entropy",
			func(c *client) (int, string) { return c.do("PUT", "/entropy", `{}`) },
			ok, ok,
		},
		{
			"GET /version",
			func(c *client) (int, string) { return c.do("GET", "/version", "") },
			want{200, `"firecracker_version":"1.6.0"`}, want{200, `"firecracker_version":"1.16.1"`},
		},
		{
			"PATCH /vm before boot",
			func(c *client) (int, string) { return c.do("PATCH", "/vm", `{"state":"Paused"}`) },
			want{400, msgPreBoot}, want{400, msgPreBoot},
		},
		{
			"PATCH /vm after boot",
			func(c *client) (int, string) {
				c.boot()
				return c.do("PATCH", "/vm", `{"state":"Paused"}`)
			},
			ok, ok,
		},
		{
			"InstanceStart without machine-config",
			func(c *client) (int, string) {
				c.must("PUT", "/boot-source", `{"kernel_image_path":"`+c.file("vmlinux")+`"}`)
				code, msg := c.do("PUT", "/actions", `{"action_type":"InstanceStart"}`)
				if code == 204 {
					mc := c.must("GET", "/machine-config", "")
					if !strings.Contains(mc, `"vcpu_count":1`) || !strings.Contains(mc, `"mem_size_mib":128`) {
						return 500, "defaults: " + mc
					}
				}
				return code, msg
			},
			ok, ok,
		},
		{
			"InstanceStart without boot-source",
			func(c *client) (int, string) { return c.do("PUT", "/actions", `{"action_type":"InstanceStart"}`) },
			want{400, msgNoKernel}, want{400, msgNoKernel},
		},
		{
			"SendCtrlAltDel before boot",
			func(c *client) (int, string) { return c.do("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`) },
			want{400, msgPreBoot}, want{400, msgPreBoot},
		},
		{
			"SendCtrlAltDel after boot",
			func(c *client) (int, string) {
				c.boot()
				code, msg := c.do("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
				select {
				case <-c.srv.CtrlAltDel:
				default:
					return 500, "the guest did not get it"
				}
				return code, msg
			},
			ok, ok,
		},
		{
			"snapshot/create with version",
			func(c *client) (int, string) {
				c.boot()
				c.must("PATCH", "/vm", `{"state":"Paused"}`)
				return c.do("PUT", "/snapshot/create", `{"snapshot_path":"/s","mem_file_path":"/m","version":"1.6.0"}`)
			},
			want{400, "unknown field `version`"}, want{400, "unknown field `version`"},
		},
		{
			"snapshot/create while running",
			func(c *client) (int, string) {
				c.boot()
				return c.do("PUT", "/snapshot/create", `{"snapshot_path":"/s","mem_file_path":"/m"}`)
			},
			want{400, "not paused"}, want{400, "not paused"},
		},
		{
			"snapshot/load after configuring",
			func(c *client) (int, string) {
				c.must("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`)
				return c.do("PUT", "/snapshot/load", `{"snapshot_path":"`+c.file("snap")+`","mem_backend":{"backend_type":"File","backend_path":"/m"}}`)
			},
			want{400, msgLoadAfterSetup}, want{400, msgLoadAfterSetup},
		},
		{
			"vsock after boot",
			func(c *client) (int, string) {
				c.boot()
				return c.do("PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+filepath.Join(c.dir, "v.sock")+`"}`)
			},
			want{400, msgPostBoot}, want{400, msgPostBoot},
		},
		{
			"machine-config after boot",
			func(c *client) (int, string) {
				c.boot()
				return c.do("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`)
			},
			want{400, msgPostBoot}, want{400, msgPostBoot},
		},
		{
			"drive after boot",
			func(c *client) (int, string) {
				c.boot()
				return c.do("PUT", "/drives/d1", `{"drive_id":"d1","path_on_host":"`+c.file("d1")+`","is_root_device":false,"is_read_only":true}`)
			},
			// 1.16 routes it to PCI hotplug, which needs --enable-pci.
			want{400, msgPostBoot}, want{400, "--enable-pci"},
		},
		{
			"unknown route",
			func(c *client) (int, string) { return c.do("PUT", "/nonsense", `{}`) },
			want{400, "Invalid request method and/or path: PUT /nonsense."},
			want{400, "Invalid request method and/or path: PUT /nonsense."},
		},
		{
			"serial (1.16 only)",
			func(c *client) (int, string) { return c.do("PUT", "/serial", `{}`) },
			want{400, "Invalid request method and/or path"}, want{400, "not modelled"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range Versions {
				t.Run(SubtestName(v), func(t *testing.T) {
					w := tc.v16
					if v == "1.16.1" {
						w = tc.v11
					}
					code, msg := tc.run(newClient(t, v))
					if code != w.code || !strings.Contains(msg, w.msg) {
						t.Errorf("got %d %q, want %d with %q", code, msg, w.code, w.msg)
					}
				})
			}
		})
	}
}

func TestBodiesAgainstTheSpec(t *testing.T) {
	for _, v := range Versions {
		t.Run(SubtestName(v), func(t *testing.T) {
			c := newClient(t, v)
			for _, tc := range []struct{ path, body, msg string }{
				{"/machine-config", `{"vcpu_count":0,"mem_size_mib":128}`, "vcpu_count"},
				{"/machine-config", `{"vcpu_count":33,"mem_size_mib":128}`, "vcpu_count"},
				{"/machine-config", `{"mem_size_mib":128}`, "vcpu_count"},
				{"/machine-config", `{"vcpu_count":"2","mem_size_mib":128}`, "vcpu_count"},
				{"/boot-source", `{"boot_args":"x"}`, "kernel_image_path"},
				{"/drives/a", `{"drive_id":"a","is_root_device":false,"cache_type":"Fast"}`, "cache_type"},
				{"/drives/a", `{"drive_id":"a","is_root_device":false,"rate_limiter":{"bandwidth":{"size":1,"refill_time":1,"extra":1}}}`, "unknown field `extra`"},
				{"/drives/a", `{"drive_id":"b","is_root_device":false,"path_on_host":"` + c.file("b") + `"}`, "does not match"},
				{"/vsock", `{"guest_cid":2,"uds_path":"/v.sock"}`, "guest_cid"},
				{"/actions", `{"action_type":"Reboot"}`, "action_type"},
				{"/actions", ``, "empty"},
			} {
				if code, msg := c.do("PUT", tc.path, tc.body); code != 400 || !strings.Contains(msg, tc.msg) {
					t.Errorf("PUT %s %s: %d %q, want 400 naming %s", tc.path, tc.body, code, msg, tc.msg)
				}
			}
		})
	}
}

func TestResourcesAreReallyOpened(t *testing.T) {
	for _, v := range Versions {
		t.Run(SubtestName(v), func(t *testing.T) {
			c := newClient(t, v)
			ro := c.file("ro.img")
			if err := os.Chmod(ro, 0o444); err != nil {
				t.Fatal(err)
			}
			// As root the mode bits do not stop an O_RDWR open; an unwritable file system
			// would. What is checked here is that the path is opened at all, with its mode.
			if code, msg := c.do("PUT", "/drives/a", `{"drive_id":"a","is_root_device":false,"path_on_host":"/nonexistent/disk"}`); code != 400 || !strings.Contains(msg, "BackingFile") {
				t.Errorf("missing drive: %d %s", code, msg)
			}
			c.must("PUT", "/drives/a", `{"drive_id":"a","is_root_device":false,"is_read_only":true,"path_on_host":"`+ro+`"}`)
			if code, msg := c.do("PUT", "/boot-source", `{"kernel_image_path":"`+c.file("k")+`","initrd_path":"/nonexistent/initrd"}`); code != 400 || !strings.Contains(msg, "initrd") {
				t.Errorf("missing initrd: %d %s", code, msg)
			}
			uds := filepath.Join(c.dir, "v.sock")
			c.must("PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+uds+`"}`)
			if fi, err := os.Stat(uds); err != nil || fi.Mode()&os.ModeSocket == 0 {
				t.Fatalf("vsock socket not bound at PUT time: %v", err)
			}
			conn, err := net.Dial("unix", uds)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(conn, "CONNECT 52\n")
			if n, _ := conn.Read(make([]byte, 16)); n != 0 {
				t.Error("CONNECT to a port no guest listens on must be closed")
			}
			conn.Close()
			// A second vsock at a path already bound fails to bind.
			other := newClient(t, v)
			if code, msg := other.do("PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+uds+`"}`); code != 400 || !strings.Contains(msg, "UnixBind") {
				t.Errorf("bind over a live socket: %d %s", code, msg)
			}
		})
	}
}

func TestEveryOperationIsAnsweredOrRefusedByName(t *testing.T) {
	for _, v := range Versions {
		api, err := LoadAPI(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range api.routes {
			for method, op := range map[string]bool{"GET": r.item.Get != nil, "PUT": r.item.Put != nil, "PATCH": r.item.Patch != nil} {
				if !op {
					continue
				}
				path := strings.NewReplacer("{drive_id}", "a", "{iface_id}", "a", "{id}", "a").Replace(r.template)
				o, ok := api.Match(method, path)
				if !ok {
					t.Errorf("%s: %s %s does not match its own route", v, method, path)
					continue
				}
				if _, modelled := handlers[o.ID]; !modelled {
					t.Logf("%s: %s (%s %s) answers 'not modelled'", v, o.ID, method, r.template)
				}
			}
		}
	}
}

func mkfifo(p string) error { return unix.Mkfifo(p, 0o600) }
