package spec

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParsePort(t *testing.T) {
	for in, want := range map[string]Port{
		"8080:8000":             {HostPort: 8080, GuestPort: 8000, Proto: "tcp"},
		"127.0.0.1:53:5353/udp": {HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 53, GuestPort: 5353, Proto: "udp"},
		"10.0.0.1:443:8443/tcp": {HostIP: netip.MustParseAddr("10.0.0.1"), HostPort: 443, GuestPort: 8443, Proto: "tcp"},
	} {
		got, err := ParsePort(in)
		if err != nil || got != want {
			t.Errorf("%q: got %+v %v, want %+v", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"8080":       "want [IP:]HOSTPORT:GUESTPORT",
		"0:80":       "host port",
		"80:70000":   "guest port",
		"80:80/sctp": "invalid proto",
		"::1:80:80":  "want [IP:]HOSTPORT",
		"host:80:80": "not an IPv4 address",
	} {
		if _, err := ParsePort(in); err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "--publish: ") {
			t.Errorf("%q: err %v, want --publish: …%s", in, err, want)
		}
	}
	if _, err := ParsePorts([]string{"80:80", "80:81"}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("the same host port twice: %v", err)
	}
}

func TestPublishImpliesANetwork(t *testing.T) {
	f := validFlags()
	f.Publish = []string{"8080:8000"}
	f.Net.Pool, f.Net.DHCP = "172.16.0.0/16", "embedded"
	m, err := ParseRun(f)
	if err != nil || m.Network == nil || len(m.Ports) != 1 {
		t.Fatalf("-p without --net: %+v %v", m, err)
	}
	f = validFlags()
	f.Service = "api"
	f.Net.Pool, f.Net.DHCP = "172.16.0.0/16", "embedded"
	if _, err := ParseRun(f); err == nil || !strings.Contains(err.Error(), "--http-port") {
		t.Fatalf("--service without --http-port: %v", err)
	}
}

func TestAutostartAndAutostopNeedAnHTTPPort(t *testing.T) {
	for _, tc := range []struct {
		name     string
		set      func(*RunFlags)
		wantFlag string // "" for valid
	}{
		{"autostart alone", func(f *RunFlags) { f.AutoStart = true }, "--autostart: needs --http-port"},
		{"autostop alone", func(f *RunFlags) { f.AutoStop = time.Minute }, "--autostop: needs --http-port"},
		{"autostop too short", func(f *RunFlags) { f.HTTPPort, f.AutoStop = 8000, time.Millisecond }, "--autostop: 1ms, want at least 1s"},
		{"autostop negative", func(f *RunFlags) { f.HTTPPort, f.AutoStop = 8000, -time.Second }, "--autostop: -1s"},
		{"both with a port", func(f *RunFlags) { f.HTTPPort, f.AutoStart, f.AutoStop = 8000, true, time.Minute }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := validFlags()
			f.Net.Pool, f.Net.DHCP = "172.16.0.0/16", "embedded"
			tc.set(&f)
			m, err := ParseRun(f)
			switch {
			case tc.wantFlag == "" && (err != nil || !m.AutoStart || m.AutoStop != time.Minute):
				t.Fatalf("%+v %v", m, err)
			case tc.wantFlag != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.wantFlag)):
				t.Fatalf("error %v, want it to start %q", err, tc.wantFlag)
			}
		})
	}
}
