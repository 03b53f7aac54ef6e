package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const domain = "fg.test"

// env is a proxy under test: its Source, its front server and its log.
type env struct {
	t      *testing.T
	p      *Proxy
	src    *MemorySource
	front  *httptest.Server
	client *http.Client
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(b)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, cfg Config, bs ...Backend) *env {
	t.Helper()
	e := &env{t: t, src: NewMemorySource(bs...), logs: &syncBuffer{}}
	cfg.Domain = domain
	if cfg.Source == nil {
		cfg.Source = e.src
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(e.logs, nil))
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	<-p.loaded
	e.front = httptest.NewServer(p)
	t.Cleanup(e.front.Close)
	e.client = e.front.Client()
	return e
}

// backend serves h on loopback and returns its address.
func backend(t *testing.T, h http.Handler) (*httptest.Server, netip.AddrPort) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, srv.Listener.Addr().(*net.TCPAddr).AddrPort()
}

// says answers every request with its own name.
func says(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	})
}

// deadAddr is a loopback address where nothing listens: connects are refused.
func deadAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	return addr
}

// do sends a request for host through the proxy and returns the status and body.
func (e *env) do(method, host, path, body string) (int, string, error) {
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.front.URL+path, rb)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (e *env) get(host string) (int, string) {
	e.t.Helper()
	code, body, err := e.do(http.MethodGet, host, "/", "")
	if err != nil {
		e.t.Fatalf("GET %s: %v", host, err)
	}
	return code, body
}

// releaseFirst closes ch when the test ends, before the servers registered so far close
// (they wait for handlers held on ch).
func releaseFirst(t *testing.T, ch chan struct{}) {
	t.Cleanup(func() { close(ch) })
}

// eventually polls cond until it holds, for what the proxy does not signal (log lines).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// waitFor waits until cond holds, rechecking whenever the proxy's routes or health change.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		ch := e.p.changedCh()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			e.t.Fatalf("timed out waiting for %s; routes: %+v", what, e.p.Routes())
		}
	}
}

func (e *env) health(id string) string {
	for _, r := range e.p.Routes() {
		for _, b := range r.Backends {
			if b.ID == id {
				return b.Health
			}
		}
	}
	return "absent"
}

func (e *env) waitHealth(id, want string) {
	e.t.Helper()
	e.waitFor(id+" "+want, func() bool { return e.health(id) == want })
}

func TestRoutingByNameAndService(t *testing.T) {
	_, a := backend(t, says("a"))
	_, b := backend(t, says("b"))
	_, c := backend(t, says("c"))
	_, d := backend(t, says("d"))
	e := start(t, Config{},
		Backend{ID: "1", Name: "web1", Service: "web", Addr: a},
		Backend{ID: "2", Name: "web2", Service: "web", Addr: b},
		Backend{ID: "3", Name: "solo", Addr: c},
		// A VM named like its service is one of the service's backends.
		Backend{ID: "4", Name: "api", Service: "api", Addr: d},
		Backend{ID: "5", Name: "api2", Service: "API", Addr: a},
	)
	for _, id := range []string{"1", "2", "3", "4", "5"} {
		e.waitHealth(id, "healthy")
	}
	for host, want := range map[string]string{
		"web1.fg.test": "a", "WEB2.FG.TEST:80": "b", "solo.fg.test.": "c", "api2.fg.test": "a",
	} {
		for range 4 {
			if code, body := e.get(host); code != 200 || body != want {
				t.Fatalf("%s: got %d %q, want 200 %q", host, code, body, want)
			}
		}
	}
	for _, svc := range []struct {
		host string
		want []string
	}{{"web.fg.test", []string{"a", "b"}}, {"api.fg.test", []string{"a", "d"}}} {
		seen := map[string]int{}
		for range 10 {
			code, body := e.get(svc.host)
			if code != 200 {
				t.Fatalf("%s: %d %q", svc.host, code, body)
			}
			seen[body]++
		}
		if len(seen) != len(svc.want) || seen[svc.want[0]] == 0 || seen[svc.want[1]] == 0 {
			t.Errorf("%s: answered by %v, want both of %v", svc.host, seen, svc.want)
		}
	}
	for _, host := range []string{"nope.fg.test", "web1.other.test", "a.web1.fg.test", "fg.test", "127.0.0.1"} {
		code, body := e.get(host)
		if want := fmt.Sprintf("no route for host %q\n", host); code != 404 || body != want {
			t.Errorf("%s: got %d %q, want 404 %q", host, code, body, want)
		}
	}

	routes := e.p.Routes()
	var hosts []string
	for _, r := range routes {
		hosts = append(hosts, r.Host+"/"+r.Kind+fmt.Sprint(len(r.Backends)))
	}
	if got, want := strings.Join(hosts, " "), "api.fg.test/service2 api2.fg.test/name1 solo.fg.test/name1 web.fg.test/service2 web1.fg.test/name1 web2.fg.test/name1"; got != want {
		t.Errorf("Routes: %s, want %s", got, want)
	}
}

func TestRoutesFollowTheSource(t *testing.T) {
	e := start(t, Config{})
	if code, _ := e.get("late.fg.test"); code != 404 {
		t.Fatalf("before: %d, want 404", code)
	}
	_, a := backend(t, says("a"))
	set := time.Now()
	e.src.Set(Backend{ID: "1", Name: "late", Addr: a})
	e.waitHealth("1", "healthy")
	if d := time.Since(set); d > time.Second {
		t.Errorf("routed %s after it appeared, want within 1s", d)
	}
	if code, body := e.get("late.fg.test"); code != 200 || body != "a" {
		t.Fatalf("after: %d %q", code, body)
	}
	e.src.Set()
	e.waitFor("route gone", func() bool { return len(e.p.Routes()) == 0 })
	if code, _ := e.get("late.fg.test"); code != 404 {
		t.Fatalf("gone: %d, want 404", code)
	}
}

// pollOnly hides a source's Changes: the proxy must find new backends by polling.
type pollOnly struct{ *MemorySource }

func (pollOnly) Changes() <-chan struct{} { return nil }

func TestPollingFindsNewBackendWithinOneSecond(t *testing.T) {
	src := NewMemorySource()
	e := start(t, Config{Source: pollOnly{src}})
	_, a := backend(t, says("a"))
	set := time.Now()
	src.Set(Backend{ID: "1", Name: "late", Addr: a})
	e.waitHealth("1", "healthy")
	if d := time.Since(set); d > time.Second {
		t.Errorf("routed %s after it appeared, want within 1s", d)
	}
}

func TestBalancingSpreadsLoad(t *testing.T) {
	var bs []Backend
	for i, name := range []string{"a", "b", "c"} {
		_, addr := backend(t, says(name))
		bs = append(bs, Backend{ID: fmt.Sprint(i), Name: name, Service: "api", Addr: addr})
	}
	e := start(t, Config{}, bs...)
	for _, b := range bs {
		e.waitHealth(b.ID, "healthy")
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 75 {
				code, body, err := e.do("GET", "api.fg.test", "/", "")
				if err != nil || code != 200 {
					t.Errorf("%d %q %v", code, body, err)
					return
				}
				mu.Lock()
				seen[body]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, name := range []string{"a", "b", "c"} {
		if seen[name] < 100 { // 600 requests: a fair share is 200
			t.Errorf("backends answered %v: %s got less than half its share", seen, name)
		}
	}
}

func TestLeastOutstandingPrefersIdleBackend(t *testing.T) {
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	_, busy := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held <- struct{}{}
		<-hold
		io.WriteString(w, "busy")
	}))
	_, idle := backend(t, says("idle"))
	e := start(t, Config{},
		Backend{ID: "busy", Service: "api", Addr: busy},
		Backend{ID: "idle", Service: "api", Addr: idle})
	releaseFirst(t, hold)
	e.waitHealth("busy", "healthy")
	e.waitHealth("idle", "healthy")

	// Send requests until one is held by "busy" (ties rotate, so the first or second).
	results := make(chan string, 4)
	for held1 := false; !held1; {
		go func() {
			_, body, _ := e.do("GET", "api.fg.test", "/", "")
			results <- body
		}()
		select {
		case <-held:
			held1 = true
		case body := <-results:
			if body != "idle" {
				t.Fatalf("answered by %q", body)
			}
		}
	}
	for i := range 20 {
		if code, body := e.get("api.fg.test"); code != 200 || body != "idle" {
			t.Fatalf("request %d with busy holding one: %d %q, want the idle backend", i, code, body)
		}
	}
}

func TestKeepAliveBothSides(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(says("a"))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	e := start(t, Config{}, Backend{ID: "1", Name: "web", Addr: srv.Listener.Addr().(*net.TCPAddr).AddrPort()})
	e.waitHealth("1", "healthy")
	before := conns.Load() // health checks connect too
	reused := 0
	for range 20 {
		req, _ := http.NewRequest("GET", e.front.URL, nil)
		req.Host = "web.fg.test"
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) {
				if i.Reused {
					reused++
				}
			},
		}))
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if reused != 19 {
		t.Errorf("client reused its connection %d times of 19", reused)
	}
	if n := conns.Load() - before; n > 2 { // a health check may land in between
		t.Errorf("backend saw %d new connections for 20 sequential requests, want 1", n)
	}
}

func TestUnhealthyBackendsGet503AndComeBack(t *testing.T) {
	addr := deadAddr(t)
	e := start(t, Config{Health: HealthCheck{Interval: 50 * time.Millisecond}},
		Backend{ID: "1", Name: "web", Addr: addr})
	e.waitHealth("1", "unhealthy")
	if code, body := e.get("web.fg.test"); code != 503 || body != "no healthy backend for web.fg.test\n" {
		t.Fatalf("got %d %q", code, body)
	}
	// The same address starts listening: the checks bring the backend back.
	l, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	srv := &http.Server{Handler: says("back")}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	e.waitHealth("1", "healthy")
	if code, body := e.get("web.fg.test"); code != 200 || body != "back" {
		t.Fatalf("got %d %q", code, body)
	}
}

func TestHTTPHealthCheck(t *testing.T) {
	var ok atomic.Bool
	ok.Store(true)
	var host atomic.Value
	_, addr := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			host.Store(r.Host)
			if !ok.Load() {
				http.Error(w, "sick", 500)
			}
			return
		}
		io.WriteString(w, "a")
	}))
	e := start(t, Config{Health: HealthCheck{Path: "/healthz", Interval: 20 * time.Millisecond, Fall: 2, Rise: 2}},
		Backend{ID: "1", Name: "web", Service: "api", Addr: addr})
	e.waitHealth("1", "healthy")
	if h, _ := host.Load().(string); h != "web.fg.test" {
		t.Errorf("health check Host %q, want web.fg.test", h)
	}
	ok.Store(false)
	e.waitHealth("1", "unhealthy")
	if r := e.p.Routes()[0].Backends[0]; !strings.Contains(r.LastError, "500") {
		t.Errorf("last error %q, want the status", r.LastError)
	}
	ok.Store(true)
	e.waitHealth("1", "healthy")
}

// TestBackendKilledMidLoad kills one of three backends under load: only requests in
// flight to it may fail, and it leaves the rotation within the health interval.
func TestBackendKilledMidLoad(t *testing.T) {
	const interval = 200 * time.Millisecond
	var servers []*httptest.Server
	var bs []Backend
	for i, name := range []string{"a", "b", "c"} {
		srv, addr := backend(t, says(name))
		servers = append(servers, srv)
		bs = append(bs, Backend{ID: name, Service: "api", Addr: addr})
		_ = i
	}
	e := start(t, Config{Health: HealthCheck{Interval: interval, Fall: 1}}, bs...)
	for _, b := range bs {
		e.waitHealth(b.ID, "healthy")
	}
	const total, workers = 2000, 16
	var next atomic.Int32
	var killed atomic.Bool
	half := make(chan struct{})
	type result struct {
		afterKill bool
		code      int
		body      string
		err       error
	}
	results := make(chan result, total)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > total {
					return
				}
				if n == total/4 {
					close(half)
				}
				after := killed.Load()
				code, body, err := e.do("GET", "api.fg.test", "/", "")
				results <- result{after, code, body, err}
			}
		}()
	}
	<-half
	killedAt := time.Now()
	servers[1].Listener.Close()
	servers[1].CloseClientConnections()
	killed.Store(true)
	e.waitHealth("b", "unhealthy")
	if d := time.Since(killedAt); d > interval+500*time.Millisecond {
		t.Errorf("killed backend left the rotation after %s, want within the %s interval", d, interval)
	}
	wg.Wait()
	close(results)
	failedBefore := 0
	for r := range results {
		ok := r.err == nil && r.code == 200
		switch {
		case r.afterKill && !ok:
			t.Errorf("request started after the kill failed: %d %q %v", r.code, r.body, r.err)
		case r.afterKill && r.body == "b":
			t.Errorf("request started after the kill answered by the killed backend")
		case !ok:
			failedBefore++
		}
	}
	if failedBefore > workers {
		t.Errorf("%d requests failed, more than the %d that can be in flight", failedBefore, workers)
	}
	t.Logf("requests in flight at the kill that failed: %d", failedBefore)
}

// TestDrainingRollingReplacement replaces both backends of a service under load, each by
// draining it first: no request may fail.
func TestDrainingRollingReplacement(t *testing.T) {
	var mu sync.Mutex
	counts := map[string]int{}
	slow := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Millisecond) // a little work, so that requests are in flight when a drain starts
			mu.Lock()
			counts[name]++
			mu.Unlock()
			io.WriteString(w, name)
		})
	}
	newBackend := func(name string) (*httptest.Server, Backend) {
		srv, addr := backend(t, slow(name))
		return srv, Backend{ID: name, Name: name, Service: "api", Addr: addr}
	}
	sa, a := newBackend("a")
	sb, b := newBackend("b")
	e := start(t, Config{}, a, b)
	e.waitHealth("a", "healthy")
	e.waitHealth("b", "healthy")

	const total, workers = 2000, 16
	var next atomic.Int32
	var failed atomic.Int32
	stage := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > total {
					return
				}
				if n == total/4 {
					close(stage[0])
				}
				if n == total/2 {
					close(stage[1])
				}
				code, body, err := e.do("POST", "api.fg.test", "/", "payload")
				if err != nil || code != 200 {
					failed.Add(1)
					t.Errorf("request %d: %d %q %v", n, code, body, err)
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Replace a by c: c joins, a drains, a stops once drained.
	<-stage[0]
	_, c := newBackend("c")
	a.Draining = true
	e.src.Set(a, b, c)
	if err := e.p.WaitDrained(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	sa.Close()
	// Replace b by d; a is gone from the listing.
	<-stage[1]
	_, d := newBackend("d")
	b.Draining = true
	e.src.Set(b, c, d)
	if err := e.p.WaitDrained(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	sb.Close()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during the rolling replacement", failed.Load(), total)
	}
	mu.Lock()
	defer mu.Unlock()
	if counts["c"] == 0 || counts["d"] == 0 || counts["a"]+counts["b"]+counts["c"]+counts["d"] != total {
		t.Errorf("answers by backend: %v", counts)
	}
}

func TestWaitDrainedWaitsForInFlight(t *testing.T) {
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	_, addr := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held <- struct{}{}
		<-hold
		io.WriteString(w, "done")
	}))
	e := start(t, Config{}, Backend{ID: "1", Name: "web", Addr: addr})
	e.waitHealth("1", "healthy")
	res := make(chan string, 1)
	go func() {
		_, body, _ := e.do("GET", "web.fg.test", "/", "")
		res <- body
	}()
	<-held
	e.src.Update("1", func(b *Backend) { b.Draining = true })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.p.WaitDrained(ctx, "1"); err == nil {
		t.Fatal("WaitDrained returned with a request in flight")
	}
	// A draining backend gets no new request.
	if code, body := e.get("web.fg.test"); code != 503 {
		t.Fatalf("request to a draining-only route: %d %q, want 503", code, body)
	}
	close(hold)
	if body := <-res; body != "done" {
		t.Fatalf("in-flight request got %q", body)
	}
	if err := e.p.WaitDrained(context.Background(), "1"); err != nil {
		t.Fatal(err)
	}
}

// TestRetryOnConnectFailure: a POST whose connect fails goes to another backend with its
// body whole, exactly once.
func TestRetryOnConnectFailure(t *testing.T) {
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	var mu sync.Mutex
	var bodies []string
	_, good := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-hold
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		io.WriteString(w, "good")
	}))
	// "gone" passes its first health check, then stops listening; checks are too rare
	// to notice before the request does.
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := gl.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	e := start(t, Config{Health: HealthCheck{Interval: time.Hour}},
		Backend{ID: "good", Service: "api", Addr: good},
		Backend{ID: "gone", Service: "api", Addr: gl.Addr().(*net.TCPAddr).AddrPort()})
	releaseFirst(t, hold)
	e.waitHealth("good", "healthy")
	e.waitHealth("gone", "healthy")
	gl.Close()
	// Hold a request at "good" so that least-outstanding picks "gone" first.
	go e.do("GET", "api.fg.test", "/hold", "")
	<-held
	payload := strings.Repeat("x", 100<<10)
	code, body, err := e.do("POST", "api.fg.test", "/", payload)
	if err != nil || code != 200 || body != "good" {
		t.Fatalf("POST: %d %q %v", code, body, err)
	}
	mu.Lock()
	if len(bodies) != 1 || bodies[0] != payload {
		t.Errorf("good backend got %d bodies (first %d bytes), want the payload once", len(bodies), len(bodies[0]))
	}
	mu.Unlock()
	if h := e.health("gone"); h != "unhealthy" {
		t.Errorf("backend whose connect failed is %s, want unhealthy", h)
	}
	if !strings.Contains(e.logs.String(), `"attempts":2`) {
		t.Errorf("access log does not show 2 attempts:\n%s", e.logs.String())
	}
	if n := e.p.metrics.retries.Load(); n != 1 {
		t.Errorf("retries %d, want 1", n)
	}
}

// TestNoRetryAfterBodySent: a backend that read the request and then dropped the
// connection is not followed by another backend: the client gets 502.
func TestNoRetryAfterBodySent(t *testing.T) {
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	var otherGot atomic.Int32
	_, other := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-hold
			return
		}
		otherGot.Add(1)
	}))
	var dropperGot atomic.Int32
	_, dropper := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		dropperGot.Add(1)
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	e := start(t, Config{},
		Backend{ID: "other", Service: "api", Addr: other},
		Backend{ID: "dropper", Service: "api", Addr: dropper})
	releaseFirst(t, hold)
	e.waitHealth("other", "healthy")
	e.waitHealth("dropper", "healthy")
	go e.do("GET", "api.fg.test", "/hold", "")
	<-held
	code, body, err := e.do("POST", "api.fg.test", "/", "once")
	if err != nil || code != 502 || body != "bad response from the backend of api.fg.test\n" {
		t.Fatalf("POST: %d %q %v", code, body, err)
	}
	if dropperGot.Load() != 1 || otherGot.Load() != 0 {
		t.Errorf("dropper got %d, other got %d: want the request sent once, to the dropper only", dropperGot.Load(), otherGot.Load())
	}
}

func TestBodyGuard(t *testing.T) {
	closed := false
	g := &bodyGuard{ReadCloser: readCloser{strings.NewReader("abc"), func() { closed = true }}}
	g.Close()
	if closed {
		t.Fatal("an unread body was closed: the next backend could not get it")
	}
	b, _ := io.ReadAll(g)
	if string(b) != "abc" || !g.read.Load() {
		t.Fatalf("read %q, read flag %v", b, g.read.Load())
	}
	g.Close()
	if !closed {
		t.Fatal("a body being sent was not closed")
	}
}

type readCloser struct {
	io.Reader
	close func()
}

func (r readCloser) Close() error { r.close(); return nil }

func TestErrorResponses(t *testing.T) {
	release := make(chan struct{})
	_, slow := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	_, dropper := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, _ := http.NewResponseController(w).Hijack()
		c.Close()
	}))
	// "refusing" passes its first checks, then stops listening.
	var refusing []Backend
	var listeners []net.Listener
	for _, id := range []string{"r1", "r2"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, l)
		refusing = append(refusing, Backend{ID: id, Service: "refusing", Addr: l.Addr().(*net.TCPAddr).AddrPort()})
	}
	bs := append([]Backend{
		{ID: "slow", Name: "slow", Addr: slow},
		{ID: "dropper", Name: "dropper", Addr: dropper},
		{ID: "dead", Name: "dead", Addr: deadAddr(t)},
	}, refusing...)
	e := start(t, Config{Health: HealthCheck{Interval: time.Hour}, Timeout: 5 * time.Second,
		RouteTimeouts: map[string]time.Duration{"slow": 100 * time.Millisecond}}, bs...)
	releaseFirst(t, release)
	e.waitHealth("r1", "healthy")
	e.waitHealth("r2", "healthy")
	e.waitHealth("dead", "unhealthy")
	for _, l := range listeners {
		l.Close()
	}
	for _, c := range []struct {
		host string
		code int
		body string
	}{
		{"dead.fg.test", 503, "no healthy backend for dead.fg.test\n"},
		{"refusing.fg.test", 502, "could not connect to any backend of refusing.fg.test\n"},
		{"slow.fg.test", 504, "the backend of slow.fg.test did not answer within 100ms\n"},
		{"dropper.fg.test", 502, "bad response from the backend of dropper.fg.test\n"},
		{"none.fg.test", 404, "no route for host \"none.fg.test\"\n"},
	} {
		code, body, err := e.do("POST", c.host, "/", "data")
		if err != nil || code != c.code || body != c.body {
			t.Errorf("%s: got %d %q %v, want %d %q", c.host, code, body, err, c.code, c.body)
		}
	}
	// A second request to the refusing route finds both backends out already.
	if code, body := e.get("refusing.fg.test"); code != 503 {
		t.Errorf("refusing again: %d %q, want 503", code, body)
	}
}

func TestXForwardedHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	hosts := make(chan string, 1)
	_, addr := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		hosts <- r.Host
	}))
	e := start(t, Config{}, Backend{ID: "1", Name: "web", Addr: addr})
	e.waitHealth("1", "healthy")
	req, _ := http.NewRequest("GET", e.front.URL+"/x", nil)
	req.Host = "web.fg.test:8080"
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Forwarded-Host", "spoofed")
	req.Header.Set("Forwarded", "for=spoofed")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := <-seen
	for k, want := range map[string]string{
		"X-Forwarded-For":   "203.0.113.7, 127.0.0.1",
		"X-Forwarded-Host":  "web.fg.test:8080",
		"X-Forwarded-Proto": "http",
		"Forwarded":         "",
	} {
		if got := strings.Join(h.Values(k), ","); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if host := <-hosts; host != "web.fg.test:8080" {
		t.Errorf("backend saw Host %q, want the client's", host)
	}
}

func TestStreamingBodies(t *testing.T) {
	next := map[string]chan struct{}{"/stream": make(chan struct{}), "/known-length": make(chan struct{})}
	_, addr := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo" {
			// Echo a chunked upload as it comes.
			http.NewResponseController(w).EnableFullDuplex()
			io.Copy(w, r.Body)
			return
		}
		if r.URL.Path == "/known-length" {
			w.Header().Set("Content-Length", "13")
		}
		io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		<-next[r.URL.Path]
		io.WriteString(w, "second\n")
	}))
	e := start(t, Config{}, Backend{ID: "1", Name: "web", Addr: addr})
	e.waitHealth("1", "healthy")

	// Both a stream and a slow response of known length reach the client as they come.
	for _, path := range []string{"/stream", "/known-length"} {
		req, _ := http.NewRequest("GET", e.front.URL+path, nil)
		req.Host = "web.fg.test"
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
		if chunked != (path == "/stream") {
			t.Errorf("%s: transfer encoding %v, content length %d", path, resp.TransferEncoding, resp.ContentLength)
		}
		buf := make([]byte, 6)
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first\n" {
			t.Fatalf("%s: first part before the backend wrote the second: %q %v", path, buf, err)
		}
		close(next[path])
		rest, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(rest) != "second\n" {
			t.Fatalf("%s: rest %q", path, rest)
		}
	}

	pr, pw := io.Pipe()
	go func() {
		for i := range 100 {
			fmt.Fprintf(pw, "line %d\n", i)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", e.front.URL+"/echo", pr)
	req.Host = "web.fg.test"
	resp2, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	got, _ := io.ReadAll(resp2.Body)
	if !bytes.HasPrefix(got, []byte("line 0\n")) || !bytes.HasSuffix(got, []byte("line 99\n")) || bytes.Count(got, []byte("\n")) != 100 {
		t.Fatalf("echoed chunked upload: %d bytes", len(got))
	}
}

func TestAutostart(t *testing.T) {
	src := NewMemorySource(Backend{ID: "w1", Name: "lazy1", Service: "lazy", Stopped: true})
	var calls atomic.Int32
	waker := wakerFunc(func(ctx context.Context, b Backend) error {
		calls.Add(1)
		if b.ID != "w1" {
			return errors.New("wrong backend")
		}
		_, addr := backend(t, says("woken"))
		b.Stopped, b.Addr = false, addr
		src.Set(b)
		return nil
	})
	e := start(t, Config{Source: src, Waker: waker})
	if h := e.health("w1"); h != "stopped" {
		t.Fatalf("stopped backend shows %q", h)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, err := e.do("GET", "lazy.fg.test", "/", "")
			if err != nil || code != 200 || body != "woken" {
				t.Errorf("held request: %d %q %v", code, body, err)
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("Wake called %d times for one stopped backend, want 1", n)
	}
}

func TestAutostartFailures(t *testing.T) {
	src := NewMemorySource(
		Backend{ID: "f", Name: "failing", Stopped: true},
		Backend{ID: "n", Name: "never", Stopped: true})
	waker := wakerFunc(func(ctx context.Context, b Backend) error {
		if b.ID == "f" {
			return errors.New("no memory")
		}
		return nil // says it started, but nothing ever appears
	})
	e := start(t, Config{Source: src, Waker: waker, WakeTimeout: 100 * time.Millisecond})
	if code, body := e.get("failing.fg.test"); code != 503 || body != "could not start a backend for failing.fg.test\n" {
		t.Errorf("failing wake: %d %q", code, body)
	}
	if code, body := e.get("never.fg.test"); code != 503 || body != "no backend for never.fg.test became ready within 100ms\n" {
		t.Errorf("wake that never comes: %d %q", code, body)
	}
}

type wakerFunc func(context.Context, Backend) error

func (f wakerFunc) Wake(ctx context.Context, b Backend) error { return f(ctx, b) }

func TestConfigErrors(t *testing.T) {
	src := NewMemorySource()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Source: src}, "proxy: Domain: empty domain"},
		{Config{Domain: "bad_domain.test", Source: src}, `proxy: Domain: "bad_domain.test" is not a valid DNS name (label "bad_domain")`},
		{Config{Domain: "fg.test"}, "proxy: Source: required"},
		{Config{Domain: "fg.test", Source: src, RouteTimeouts: map[string]time.Duration{"a.b": time.Second}}, `proxy: RouteTimeouts: "a.b" is not a route name (one DNS label)`},
		{Config{Domain: "fg.test", Source: src, Health: HealthCheck{Path: "healthz"}}, `proxy: Health.Path: "healthz" does not start with /`},
		{Config{Domain: "fg.test", Source: src, Timeout: -time.Second}, "proxy: Timeout: -1s is negative"},
	} {
		_, err := New(c.cfg)
		if err == nil || err.Error() != c.want {
			t.Errorf("got %v, want %s", err, c.want)
		}
	}
	if err := ValidateDomain("fg.local."); err != nil {
		t.Errorf("fg.local.: %v", err)
	}
}

func TestBadBackendsAreSkipped(t *testing.T) {
	_, addr := backend(t, says("a"))
	e := start(t, Config{},
		Backend{ID: "1", Name: "under_score", Service: "api", Addr: addr},
		Backend{ID: "", Name: "noid", Addr: addr},
		Backend{ID: "2", Name: "noaddr"},
	)
	e.waitHealth("1", "healthy")
	if code, _ := e.get("api.fg.test"); code != 200 {
		t.Errorf("service of a backend with a bad name: %d", code)
	}
	routes := e.p.Routes()
	if len(routes) != 1 || routes[0].Host != "api.fg.test" {
		t.Errorf("routes %+v, want only api.fg.test", routes)
	}
	for _, want := range []string{`"error":"name \"under_score\" is not a DNS label"`, `"error":"no ID"`, `"error":"no address"`} {
		if strings.Count(e.logs.String(), want) != 1 {
			t.Errorf("log should warn once: %s\n%s", want, e.logs.String())
		}
	}
}

// TestUnreadBodiesKeepConnectionsUsable: requests whose bodies nobody read (no backend
// to send them to) must leave the client's keep-alive connection fit for the next one.
func TestUnreadBodiesKeepConnectionsUsable(t *testing.T) {
	e := start(t, Config{Health: HealthCheck{Interval: 50 * time.Millisecond}},
		Backend{ID: "1", Name: "dead", Addr: deadAddr(t)})
	e.waitHealth("1", "unhealthy")
	for i := range 30 {
		code, _, err := e.do("POST", "dead.fg.test", "/", "unread body")
		if err != nil || code != 503 {
			t.Fatalf("request %d: %d %v", i, code, err)
		}
	}
}
