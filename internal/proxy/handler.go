package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// exchange is one request's bookkeeping, shared by ServeHTTP, the balancer and the error
// handler through the request's context.
type exchange struct {
	rec      recorder
	start    time.Time
	client   context.Context // the client's own context: done when it leaves
	route    *route
	backend  *backendState // holds one in-flight count while set
	attempts int
	upstream int   // the backend's status code
	status   int   // set when no response was written (499)
	err      error // why the request failed, for the access log
	aborted  bool  // the response was cut after its headers

	fullDuplex bool
}

type exchangeKey struct{}

// statusError is a failure the client gets as a status and a one-line reason.
type statusError struct {
	status int
	reason string
	err    error
}

func (e *statusError) Error() string {
	if e.err != nil {
		return e.reason + ": " + e.err.Error()
	}
	return e.reason
}

func (e *statusError) Unwrap() error { return e.err }

// ServeHTTP routes r by its Host to a backend.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{rec: recorder{ResponseWriter: w}, start: time.Now(), client: r.Context()}
	rec := &x.rec
	p.metrics.inflight.Add(1)
	defer func() {
		v := recover()
		if v != nil {
			x.aborted = true // ReverseProxy aborts (http.ErrAbortHandler) when a body copy fails
		}
		p.finish(rec, r, x)
		if v != nil {
			panic(v)
		}
	}()
	if r.Method == http.MethodConnect {
		p.fail(rec, x, &statusError{status: http.StatusMethodNotAllowed, reason: "CONNECT is not supported"})
		return
	}
	rt, err := p.resolve(r.Context(), r.Host)
	if err != nil {
		p.fail(rec, x, err)
		return
	}
	x.route = rt
	if r.ContentLength != 0 {
		// The request body streams to the backend while its response streams back: an
		// HTTP/1 server would otherwise discard the rest of the body once the response
		// starts, under the transport's feet (HTTP/2 is full duplex anyway).
		x.fullDuplex = http.NewResponseController(rec).EnableFullDuplex() == nil
	}
	p.rp.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x)))
}

// resolve finds the route for a Host header, waking a stopped backend if that is the
// only kind the route has and a Waker is set.
func (p *Proxy) resolve(ctx context.Context, host string) (*route, error) {
	t := p.tab.Load()
	if t == nil {
		select {
		case <-p.loaded:
			t = p.tab.Load()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	label, ok := p.label(host)
	rt := t.routes[label]
	if !ok || rt == nil {
		if len(host) > 256 { // the reason echoes the client's Host: keep it short
			host = host[:256] + "..."
		}
		return nil, &statusError{status: http.StatusNotFound, reason: fmt.Sprintf("no route for host %q", host)}
	}
	if rt.active == 0 && len(rt.stopped) > 0 && p.cfg.Waker != nil {
		return p.awaken(ctx, rt)
	}
	return rt, nil
}

// fail answers a request that never reached a backend.
func (p *Proxy) fail(w http.ResponseWriter, x *exchange, err error) {
	x.err = err
	var se *statusError
	if errors.As(err, &se) {
		writeError(w, se.status, se.reason)
		return
	}
	x.status = 499 // the client left
}

func writeError(w http.ResponseWriter, status int, reason string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	io.WriteString(w, reason+"\n")
}

// proxyError is ReverseProxy's error handler: r is the outbound request.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	x := r.Context().Value(exchangeKey{}).(*exchange)
	x.err = err
	var se *statusError
	switch {
	case errors.As(err, &se):
		writeError(w, se.status, se.reason)
	case x.client.Err() != nil:
		x.status = 499
	default:
		writeError(w, http.StatusBadGateway, fmt.Sprintf("bad response from the backend of %s", x.route.host))
	}
}

// finish releases what the request held, counts it and writes its access log line.
func (p *Proxy) finish(rec *recorder, r *http.Request, x *exchange) {
	if x.backend != nil {
		x.backend.inflight.Add(-1)
	}
	if x.fullDuplex {
		// A full-duplex HTTP/1 handler must not leave its body for the server to drain:
		// net/http (1.26) would then start its background read after aborting it, and
		// the next request on the connection panics ("invalid concurrent Body.Read
		// call"). ReverseProxy never closes the inbound body, so close it here.
		r.Body.Close()
	}
	p.metrics.inflight.Add(-1)
	status := firstNonZero(x.status, rec.status, x.upstream, http.StatusOK)
	d := time.Since(x.start)
	m, label := p.unmatched, ""
	if x.route != nil {
		m, label = x.route.metrics, x.route.label
	}
	m.observe(status, d)
	ctx := x.client
	if !p.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	attrs := make([]slog.Attr, 0, 14)
	attrs = append(attrs,
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
		slog.String("proto", r.Proto),
		slog.Int("status", status),
		slog.Int64("bytes", rec.bytes),
		slog.Duration("duration", d),
		slog.String("remote", r.RemoteAddr),
		slog.String("route", label),
	)
	if x.backend != nil {
		attrs = append(attrs, slog.String("backend", x.backend.key.id), slog.String("addr", x.backend.addr))
	}
	if x.attempts > 1 {
		attrs = append(attrs, slog.Int("attempts", x.attempts))
	}
	if x.aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	if x.err != nil {
		attrs = append(attrs, slog.String("error", x.err.Error()))
	}
	p.log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
}

// firstNonZero returns the first non-zero status.
func firstNonZero(codes ...int) int {
	for _, c := range codes {
		if c != 0 {
			return c
		}
	}
	return 0
}

// balancer is ReverseProxy's transport: it picks a backend for each attempt.
//
// Retry policy: a request moves to another backend only when the connect failed (the
// dialer's error, marked by dialError). A connect that failed means no byte of the
// request left the proxy, so any method may be retried, POST included, as long as the
// body has not been read: bodyGuard proves that, and once it has been read (the request
// was being sent) a failure is final. Failures after the connect (a reset, a malformed
// or missing response) are never retried on another backend: the backend may have acted
// on the request. (http.Transport itself may still resend a bodyless idempotent request
// on a fresh connection to the same backend when a kept-alive one turns out closed, as
// HTTP allows.)
type balancer struct{ p *Proxy }

func (bl balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	p := bl.p
	x := req.Context().Value(exchangeKey{}).(*exchange)
	var guard *bodyGuard
	if req.Body != nil && req.Body != http.NoBody {
		guard = &bodyGuard{ReadCloser: req.Body}
		req.Body = guard
	}
	var triedBuf [4]*backendState
	tried := triedBuf[:0]
	var lastErr error
	for {
		b := x.route.pick(tried)
		if b == nil {
			if lastErr != nil {
				return nil, &statusError{http.StatusBadGateway, "could not connect to any backend of " + x.route.host, lastErr}
			}
			return nil, &statusError{http.StatusServiceUnavailable, "no healthy backend for " + x.route.host, nil}
		}
		x.backend = b
		x.attempts++
		b.lastUsed.Store(x.start.UnixNano())
		req.URL.Host = b.addr
		resp, err := x.route.transport.RoundTrip(req)
		if err == nil {
			x.upstream = resp.StatusCode
			return resp, nil
		}
		var de *dialError
		if !errors.As(err, &de) || x.client.Err() != nil {
			var ne net.Error
			if x.client.Err() == nil && errors.As(err, &ne) && ne.Timeout() {
				// The transport's ResponseHeaderTimeout: the only timeout after the connect.
				return nil, &statusError{http.StatusGatewayTimeout,
					fmt.Sprintf("the backend of %s did not answer within %s", x.route.host, x.route.timeout), err}
			}
			return nil, err
		}
		p.record(b, err, true)
		b.inflight.Add(-1)
		x.backend = nil
		lastErr = err
		tried = append(tried, b)
		if guard != nil && guard.read.Load() || x.attempts >= p.cfg.MaxConnectAttempts {
			return nil, &statusError{http.StatusBadGateway, "could not connect to any backend of " + x.route.host, err}
		}
		p.metrics.retries.Add(1)
	}
}

// bodyGuard tells whether a request body has been read, and keeps it open across a
// failed connect (http.Transport closes the body of a request it could not send) so that
// the next backend gets it whole; once read, Close passes through. (ReverseProxy shields
// the inbound body from Close as well; the guard does not rely on it.)
type bodyGuard struct {
	io.ReadCloser
	read atomic.Bool
}

func (g *bodyGuard) Read(b []byte) (int, error) {
	g.read.Store(true)
	return g.ReadCloser.Read(b)
}

func (g *bodyGuard) Close() error {
	if g.read.Load() {
		return g.ReadCloser.Close()
	}
	return nil
}

// recorder notes the status and size of a response for the log and the metrics.
// Unwrap lets http.ResponseController reach Hijack (upgrades) and the rest.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) EnableFullDuplex() error {
	return http.NewResponseController(r.ResponseWriter).EnableFullDuplex()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// wakeCall is one Waker.Wake under way for a route; requests for the route wait on it.
type wakeCall struct {
	done chan struct{}
	err  error
}

// awaken starts (or joins) the waking of a backend of rt and waits until the route has
// a healthy backend, WakeTimeout passes or the client leaves.
func (p *Proxy) awaken(ctx context.Context, rt *route) (*route, error) {
	label := rt.label
	p.mu.Lock()
	call := p.waking[label]
	if call == nil {
		call = &wakeCall{done: make(chan struct{})}
		p.waking[label] = call
		go p.wake(label, rt.stopped[0], call)
	}
	p.mu.Unlock()
	deadline := time.NewTimer(p.cfg.WakeTimeout)
	defer deadline.Stop()
	done := call.done
	for {
		changed := p.changedCh()
		if r := p.tab.Load().routes[label]; r != nil && r.ready() {
			p.mu.Lock()
			if p.waking[label] == call {
				delete(p.waking, label)
			}
			p.mu.Unlock()
			return r, nil
		}
		select {
		case <-changed:
		case <-done:
			if call.err != nil {
				return nil, &statusError{http.StatusServiceUnavailable, "could not start a backend for " + rt.host, call.err}
			}
			done = nil
		case <-deadline.C:
			return nil, &statusError{status: http.StatusServiceUnavailable,
				reason: fmt.Sprintf("no backend for %s became ready within %s", rt.host, p.cfg.WakeTimeout)}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (p *Proxy) wake(label string, b Backend, call *wakeCall) {
	p.mu.Lock()
	parent := p.runCtx
	p.mu.Unlock()
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, p.cfg.WakeTimeout)
	defer cancel()
	p.log.Info("proxy: waking backend", "route", label, "id", b.ID, "name", b.Name)
	call.err = p.cfg.Waker.Wake(ctx, b)
	forget := func() {
		p.mu.Lock()
		if p.waking[label] == call {
			delete(p.waking, label)
		}
		p.mu.Unlock()
	}
	if call.err != nil {
		p.log.Warn("proxy: waking backend", "route", label, "id", b.ID, "error", call.err)
		forget()
	} else {
		// Requests that come while the backend boots join this call instead of waking
		// another backend; the call is forgotten once the route is ready or at the deadline.
		time.AfterFunc(p.cfg.WakeTimeout, forget)
	}
	close(call.done)
	p.poke()
}
