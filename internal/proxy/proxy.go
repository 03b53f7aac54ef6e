package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy routes HTTP requests by Host to the backends a Source lists. It is an
// http.Handler; Run keeps its routes and health current.
type Proxy struct {
	cfg         Config
	log         *slog.Logger
	dialer      *net.Dialer
	transports  map[time.Duration]*http.Transport // one per route timeout
	rp          *httputil.ReverseProxy
	checkDialer *net.Dialer
	checkClient *http.Client
	metrics     *metrics
	unmatched   *routeMetrics

	tab     atomic.Pointer[table]
	loaded  chan struct{} // closed once the first listing is in
	nudge   chan struct{} // asks Run to list the backends now
	running atomic.Bool

	// Only Run's goroutine touches these.
	last    []Backend // the listing tab was built from, sorted
	listErr string    // the last listing error, logged once
	warned  map[string]bool

	mu      sync.Mutex
	runCtx  context.Context
	changed chan struct{} // closed and replaced whenever routes or health change
	waking  map[string]*wakeCall
	retired []*backendState // gone from the listing, requests still in flight
}

// flushInterval bounds how long part of a known-length response may wait in the
// proxy's buffers when the backend sends it slowly.
const flushInterval = 5 * time.Millisecond

// New checks cfg and returns a proxy; it routes once Run has listed the backends.
func New(cfg Config) (*Proxy, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:         cfg,
		log:         cfg.Logger,
		dialer:      &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		checkDialer: &net.Dialer{},
		metrics:     newMetrics(),
		loaded:      make(chan struct{}),
		nudge:       make(chan struct{}, 1),
		warned:      map[string]bool{},
		changed:     make(chan struct{}),
		waking:      map[string]*wakeCall{},
	}
	p.unmatched = p.metrics.route("")
	p.checkClient = newCheckClient(p.checkDialer)
	p.transports = map[time.Duration]*http.Transport{cfg.Timeout: p.newTransport(cfg.Timeout)}
	for _, d := range cfg.RouteTimeouts {
		if p.transports[d] == nil {
			p.transports[d] = p.newTransport(d)
		}
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "backend" // the balancer sets the backend's address per attempt
			// Append the client to the X-Forwarded-For chain it came with (as nginx's
			// $proxy_add_x_forwarded_for does): the last entry is ours, so trustworthy.
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.SetXForwarded()
			// pr.Out.Host stays the client's Host: backends see the name they were asked by.
		},
		Transport: balancer{p},
		// Streams (unknown length, i.e. chunked, and text/event-stream) are flushed on
		// every write: ReverseProxy uses -1 for them whatever this says. Responses of
		// known length are flushed at most flushInterval after a write: -1 for them too
		// would write the headers and the body separately, from two goroutines, which
		// costs a quarter of the proxy's CPU on small responses (bench/proxy).
		FlushInterval: flushInterval,
		ErrorHandler:  p.proxyError,
		ErrorLog:      slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		BufferPool:    bufferPool{},
	}
	return p, nil
}

// newTransport makes the transport of the routes whose backends have timeout to answer.
// (A transport's ResponseHeaderTimeout costs nothing per request, unlike a timer and a
// cancelable context.)
func (p *Proxy) newTransport(timeout time.Duration) *http.Transport {
	return &http.Transport{
		DialContext:           p.dial,
		MaxIdleConnsPerHost:   512,
		ResponseHeaderTimeout: timeout,
		// Shorter than most servers' keep-alive timeout, so the proxy rarely sends a
		// request on a connection the backend is closing.
		IdleConnTimeout:       30 * time.Second,
		DisableCompression:    true, // pass Accept-Encoding and bodies through untouched
		ExpectContinueTimeout: time.Second,
		// Backends speak HTTP/1.1 in the clear; no HTTP/2 upgrade towards them.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
}

// Run lists the backends now, then every PollInterval and on every change the Source
// signals, and health-checks the running ones, until ctx ends. Call it once.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("proxy: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops every health check
	p.mu.Lock()
	p.runCtx = ctx
	p.mu.Unlock()
	p.refresh(ctx)
	if p.tab.Load() == nil {
		p.tab.Store(&table{routes: map[string]*route{}, states: map[stateKey]*backendState{}})
	}
	close(p.loaded)
	tick := time.NewTicker(p.cfg.PollInterval)
	defer tick.Stop()
	changes := p.cfg.Source.Changes()
	for {
		select {
		case <-ctx.Done():
			for _, t := range p.transports {
				t.CloseIdleConnections()
			}
			return nil
		case <-tick.C:
		case <-changes:
		case <-p.nudge:
		}
		p.refresh(ctx)
	}
}

// poke asks Run for a listing now.
func (p *Proxy) poke() {
	select {
	case p.nudge <- struct{}{}:
	default:
	}
}

// notify wakes everyone waiting for the routes or health to change.
func (p *Proxy) notify() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

func (p *Proxy) changedCh() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// refresh lists the backends and, if anything changed, builds and swaps in a new table.
func (p *Proxy) refresh(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	bs, err := p.cfg.Source.Backends(lctx)
	cancel()
	if err != nil {
		if msg := err.Error(); msg != p.listErr && ctx.Err() == nil {
			p.listErr = msg
			p.log.Warn("proxy: listing backends", "error", err)
		}
		return
	}
	p.listErr = ""
	slices.SortStableFunc(bs, func(a, b Backend) int {
		return cmp.Or(strings.Compare(a.ID, b.ID), a.Addr.Compare(b.Addr))
	})
	if p.tab.Load() != nil && slices.Equal(bs, p.last) {
		return
	}
	p.last = bs
	p.apply(bs)
}

// apply builds the table for a listing. Running backends keep their state (health,
// in-flight) by ID and address; new ones start their health checks; gone ones are
// drained and retired.
func (p *Proxy) apply(bs []Backend) {
	old := p.tab.Load()
	if old == nil {
		old = &table{}
	}
	nt := &table{routes: map[string]*route{}, states: map[stateKey]*backendState{}}
	type group struct {
		running []*backendState
		stopped []Backend
	}
	services, names := map[string]*group{}, map[string]*group{}
	add := func(m map[string]*group, label string, s *backendState, b Backend) {
		g := m[label]
		if g == nil {
			g = &group{}
			m[label] = g
		}
		if s != nil {
			g.running = append(g.running, s)
		} else {
			g.stopped = append(g.stopped, b)
		}
	}
	warned := map[string]bool{}
	warn := func(b Backend, problem string) {
		k := b.ID + "\x00" + problem
		warned[k] = true
		if !p.warned[k] {
			p.log.Warn("proxy: backend not routed", "id", b.ID, "name", b.Name, "service", b.Service, "error", problem)
		}
	}
	seen := map[string]bool{}
	var added []*backendState
	for _, b := range bs {
		switch {
		case b.ID == "":
			warn(b, "no ID")
			continue
		case seen[b.ID]:
			warn(b, "ID listed twice")
			continue
		case !b.Stopped && (!b.Addr.IsValid() || b.Addr.Port() == 0):
			warn(b, "no address")
			continue
		}
		name, service := strings.ToLower(b.Name), strings.ToLower(b.Service)
		if name != "" && !isDNSLabel(name) {
			warn(b, fmt.Sprintf("name %q is not a DNS label", b.Name))
			name = ""
		}
		if service != "" && !isDNSLabel(service) {
			warn(b, fmt.Sprintf("service %q is not a DNS label", b.Service))
			service = ""
		}
		if name == "" && service == "" {
			continue
		}
		seen[b.ID] = true
		var s *backendState
		if !b.Stopped {
			key := stateKey{b.ID, b.Addr}
			s = old.states[key]
			if s == nil {
				s = &backendState{key: key, addr: b.Addr.String()}
				added = append(added, s)
			}
			meta := b
			s.meta.Store(&meta)
			if was := s.draining.Swap(b.Draining); b.Draining && !was {
				p.log.Info("proxy: backend draining", "id", b.ID, "name", b.Name, "service", b.Service, "addr", s.addr)
			}
			nt.states[key] = s
		}
		if service != "" {
			add(services, service, s, b)
		}
		if name != "" {
			add(names, name, s, b)
		}
	}
	p.warned = warned
	for _, kind := range []string{KindService, KindName} {
		m := services
		if kind == KindName {
			m = names
		}
		for label, g := range m {
			if nt.routes[label] != nil {
				continue // a service shadows a VM of the same name
			}
			rt := &route{label: label, host: label + "." + p.cfg.Domain, kind: kind,
				backends: g.running, stopped: g.stopped, timeout: p.cfg.Timeout, metrics: p.metrics.route(label)}
			if d, ok := p.cfg.RouteTimeouts[label]; ok {
				rt.timeout = d
			}
			rt.transport = p.transports[rt.timeout]
			for _, s := range g.running {
				if !s.draining.Load() {
					rt.active++
				}
			}
			nt.routes[label] = rt
		}
	}

	p.mu.Lock()
	runCtx := p.runCtx
	for key, s := range old.states {
		if nt.states[key] == nil {
			// Gone from the listing: drained (a picker on the old table skips it) and
			// kept until its requests in flight finish.
			s.draining.Store(true)
			s.stop()
			p.retired = append(p.retired, s)
			m := s.meta.Load()
			p.log.Info("proxy: backend removed", "id", m.ID, "name", m.Name, "service", m.Service, "addr", s.addr)
		}
	}
	p.retired = slices.DeleteFunc(p.retired, func(s *backendState) bool { return s.inflight.Load() == 0 })
	p.mu.Unlock()
	for _, s := range added {
		ctx, cancel := context.WithCancel(runCtx)
		s.stop = cancel
		m := s.meta.Load()
		p.log.Info("proxy: backend added", "id", m.ID, "name", m.Name, "service", m.Service, "addr", s.addr)
		go p.watchHealth(ctx, s)
	}
	p.tab.Store(nt)
	p.notify()
}

// label returns the route label of a Host header (port and trailing dot ignored), or
// false if the host is not one label under the domain.
func (p *Proxy) label(hostport string) (string, bool) {
	host := hostport
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	d := p.cfg.Domain
	n := len(host) - len(d) - 1
	if n <= 0 || host[n] != '.' || !strings.EqualFold(host[n+1:], d) {
		return "", false
	}
	label := host[:n]
	if strings.IndexByte(label, '.') >= 0 {
		return "", false
	}
	return strings.ToLower(label), true
}

// Route is one routed host and its backends, as Routes reports them.
type Route struct {
	Host     string          `json:"host"`
	Kind     string          `json:"kind"` // KindService or KindName
	Timeout  time.Duration   `json:"timeout"`
	Backends []BackendStatus `json:"backends"`
}

// BackendStatus is a backend with what the proxy knows of it now.
type BackendStatus struct {
	Backend
	// Health is "healthy", "unhealthy", "unknown" (not checked yet) or "stopped".
	Health      string    `json:"health"`
	InFlight    int64     `json:"in_flight"`
	LastCheck   time.Time `json:"last_check,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastRequest time.Time `json:"last_request,omitzero"`
}

// Routes reports every routed host and its backends now, sorted by host.
func (p *Proxy) Routes() []Route {
	t := p.tab.Load()
	if t == nil {
		return nil
	}
	routes := make([]Route, 0, len(t.routes))
	for _, rt := range t.routes {
		r := Route{Host: rt.host, Kind: rt.kind, Timeout: rt.timeout, Backends: []BackendStatus{}}
		for _, s := range rt.backends {
			s.mu.Lock()
			st := BackendStatus{Backend: *s.meta.Load(), Health: s.status().String(),
				InFlight: s.inflight.Load(), LastCheck: s.lastCheck, LastError: s.lastErr}
			s.mu.Unlock()
			if n := s.lastUsed.Load(); n != 0 {
				st.LastRequest = time.Unix(0, n)
			}
			r.Backends = append(r.Backends, st)
		}
		for _, b := range rt.stopped {
			r.Backends = append(r.Backends, BackendStatus{Backend: b, Health: "stopped"})
		}
		slices.SortFunc(r.Backends, func(a, b BackendStatus) int { return strings.Compare(a.ID, b.ID) })
		routes = append(routes, r)
	}
	slices.SortFunc(routes, func(a, b Route) int { return strings.Compare(a.Host, b.Host) })
	return routes
}

// WaitDrained returns once the proxy sends no new request to backend id (its latest
// listing has it Draining, Stopped or gone) and none of its requests is in flight, or
// with an error when ctx ends first (the caller's stop timeout). Upgraded connections
// (websockets) count as in flight until they close. It asks for a listing at once, so a
// caller that has just marked the backend Draining in the Source need not wait for the
// next poll.
func (p *Proxy) WaitDrained(ctx context.Context, id string) error {
	p.poke()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !p.drained(id) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy: backend %s not drained: %w", id, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

func (p *Proxy) drained(id string) bool {
	if t := p.tab.Load(); t != nil {
		for _, s := range t.states {
			if s.key.id == id && (!s.draining.Load() || s.inflight.Load() > 0) {
				return false
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.retired {
		if s.key.id == id && s.inflight.Load() > 0 {
			return false
		}
	}
	return true
}

// dialError marks a failed connect: nothing of the request reached the backend.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := p.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, &dialError{err}
	}
	return c, nil
}

// bufferPool lends ReverseProxy its 32 KiB copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
