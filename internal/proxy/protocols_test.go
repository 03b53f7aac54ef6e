package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// echoUpgrade is a minimal websocket-like backend: it switches protocols and echoes
// whatever bytes come afterwards.
func echoUpgrade(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "upgrade required", http.StatusUpgradeRequired)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	brw.Flush()
	io.Copy(c, brw)
}

func TestWebsocketEcho(t *testing.T) {
	_, addr := backend(t, http.HandlerFunc(echoUpgrade))
	e := start(t, Config{}, Backend{ID: "1", Name: "ws", Addr: addr})
	e.waitHealth("1", "healthy")

	c, err := net.Dial("tcp", e.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: ws.fg.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		t.Fatalf("upgrade answered %s %v", resp.Status, resp.Header)
	}
	for _, msg := range []string{"hello", "world, twice over"} {
		io.WriteString(c, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo of %q: %q %v", msg, buf, err)
		}
	}
	c.Close()
	// The upgraded request is logged as a 101 once its connection ends.
	eventually(t, "the upgrade's log line", func() bool {
		return strings.Contains(e.logs.String(), `"status":101`)
	})
}

// selfSigned returns a certificate for *.fg.test and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fg.test"},
		DNSNames:              []string{"*.fg.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestHTTP2OverTLS(t *testing.T) {
	protos := make(chan string, 1)
	_, addr := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos <- r.Proto + " " + r.Header.Get("X-Forwarded-Proto")
		io.WriteString(w, "over tls")
	}))
	e := start(t, Config{}, Backend{ID: "1", Name: "web", Addr: addr})
	e.waitHealth("1", "healthy")

	cert, pool := selfSigned(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.p.Serve(ctx, l, &tls.Config{Certificates: []tls.Certificate{cert}}) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", l.Addr().String())
		},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://web.fg.test/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "over tls" {
		t.Fatalf("got %s %q, want HTTP/2 and the backend's answer", resp.Proto, body)
	}
	if got := <-protos; got != "HTTP/1.1 https" {
		t.Errorf("backend saw %q, want HTTP/1.1 with X-Forwarded-Proto https", got)
	}
	if _, err := e.p.server(&tls.Config{}); err == nil || err.Error() != "proxy: TLS: no certificate" {
		t.Errorf("TLS without a certificate: %v", err)
	}
}

var (
	metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? (\S+)$`)
	metaLine   = regexp.MustCompile(`^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram))$`)
)

// parseMetrics checks every line of an exposition and returns the samples by
// name{labels}.
func parseMetrics(t *testing.T, text string) map[string]float64 {
	t.Helper()
	samples := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			if !metaLine.MatchString(line) {
				t.Errorf("bad comment line %q", line)
			}
			continue
		}
		m := metricLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("bad sample line %q", line)
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Errorf("bad value in %q", line)
		}
		samples[m[1]+m[2]] = v
	}
	return samples
}

func TestMetrics(t *testing.T) {
	_, a := backend(t, says("a"))
	e := start(t, Config{}, Backend{ID: "1", Name: "web", Service: "api", Addr: a},
		Backend{ID: "2", Name: "quo\"te", Service: "api", Addr: deadAddr(t)})
	e.waitHealth("1", "healthy")
	e.waitHealth("2", "unhealthy")
	for range 5 {
		e.get("api.fg.test")
	}
	e.get("nowhere.fg.test")

	rec := httptest.NewRecorder()
	e.p.ServeMetrics(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
	s := parseMetrics(t, rec.Body.String())
	addr := e.p.Routes()[0].Backends[0].Addr.String()
	for k, want := range map[string]float64{
		`firegopher_proxy_requests_total{route="api",code="200"}`:                                 5,
		`firegopher_proxy_requests_total{route="",code="404"}`:                                    1,
		`firegopher_proxy_request_duration_seconds_count{route="api"}`:                            5,
		`firegopher_proxy_request_duration_seconds_bucket{route="api",le="+Inf"}`:                 5,
		`firegopher_proxy_requests_in_flight`:                                                     0,
		`firegopher_proxy_backend_healthy{id="1",name="web",service="api",addr="` + addr + `"}`:   1,
		`firegopher_proxy_backend_in_flight{id="1",name="web",service="api",addr="` + addr + `"}`: 0,
	} {
		if got, ok := s[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	var unhealthy bool
	for k, v := range s {
		if strings.HasPrefix(k, `firegopher_proxy_backend_healthy{id="2",name="quo\"te"`) && v == 0 {
			unhealthy = true
		}
	}
	if !unhealthy {
		t.Errorf("no healthy=0 sample with an escaped label for backend 2:\n%s", rec.Body.String())
	}
	// Buckets are cumulative.
	prev := -1.0
	for _, b := range append(latencyBounds, 0) {
		le := "+Inf"
		if b != 0 {
			le = strconv.FormatFloat(b, 'g', -1, 64)
		}
		v, ok := s[`firegopher_proxy_request_duration_seconds_bucket{route="api",le="`+le+`"}`]
		if !ok || v < prev {
			t.Errorf("bucket le=%s: %v after %v", le, v, prev)
		}
		prev = v
	}
}

func TestAccessLogLine(t *testing.T) {
	_, a := backend(t, says("hello"))
	e := start(t, Config{}, Backend{ID: "vm1", Name: "web", Addr: a})
	e.waitHealth("vm1", "healthy")
	before := strings.Count(e.logs.String(), `"msg":"request"`)
	code, _, err := e.do("GET", "web.fg.test", "/some/path?q=1", "")
	if err != nil || code != 200 {
		t.Fatal(code, err)
	}
	var line map[string]any
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"request"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := strings.Count(e.logs.String(), `"msg":"request"`) - before; n != 1 {
		t.Fatalf("%d request lines for one request", n)
	}
	for k, want := range map[string]any{
		"level": "INFO", "method": "GET", "host": "web.fg.test", "path": "/some/path", "proto": "HTTP/1.1",
		"status": 200.0, "bytes": 5.0, "route": "web", "backend": "vm1", "addr": a.String(),
	} {
		if line[k] != want {
			t.Errorf("%s = %v, want %v (line %v)", k, line[k], want, line)
		}
	}
	if d, ok := line["duration"].(float64); !ok || d <= 0 {
		t.Errorf("duration %v", line["duration"])
	}
	if r, _ := line["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
		t.Errorf("remote %q", r)
	}
}
