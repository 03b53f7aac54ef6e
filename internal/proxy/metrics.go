package proxy

import (
	"bufio"
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// latencyBounds are the request duration histogram's upper bounds, in seconds.
var latencyBounds = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// routeMetrics counts one route's requests without locks: a slot per status code and per
// histogram bucket.
type routeMetrics struct {
	codes   [600]atomic.Uint64
	buckets [16]atomic.Uint64 // len(latencyBounds)+1, the last one +Inf
	sumNS   atomic.Int64
	count   atomic.Uint64
}

func (m *routeMetrics) observe(code int, d time.Duration) {
	if code >= 100 && code < len(m.codes) {
		m.codes[code].Add(1)
	}
	s := d.Seconds()
	i, _ := slices.BinarySearch(latencyBounds, s)
	m.buckets[i].Add(1)
	m.sumNS.Add(int64(d))
	m.count.Add(1)
}

// metrics holds every route's counters, kept for the proxy's life (as Prometheus expects
// of a counter), and the totals that belong to no route.
type metrics struct {
	mu       sync.Mutex
	routes   map[string]*routeMetrics // by label; "" for requests that matched no route
	retries  atomic.Uint64
	inflight atomic.Int64
}

func newMetrics() *metrics {
	return &metrics{routes: map[string]*routeMetrics{}}
}

// route returns label's counters, made on first use (routes are made on refresh, not per
// request, so the lock is off the request path).
func (m *metrics) route(label string) *routeMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	rm := m.routes[label]
	if rm == nil {
		rm = &routeMetrics{}
		m.routes[label] = rm
	}
	return rm
}

// ServeMetrics writes the proxy's metrics in Prometheus' text exposition format (0.0.4).
func (p *Proxy) ServeMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	p.writeMetrics(bw)
	bw.Flush()
}

func (p *Proxy) writeMetrics(w *bufio.Writer) {
	p.metrics.mu.Lock()
	labels := make([]string, 0, len(p.metrics.routes))
	for l := range p.metrics.routes {
		labels = append(labels, l)
	}
	routes := make([]*routeMetrics, len(labels))
	slices.Sort(labels)
	for i, l := range labels {
		routes[i] = p.metrics.routes[l]
	}
	p.metrics.mu.Unlock()

	header(w, "firegopher_proxy_requests_total", "counter", "Requests answered, by route and status code (499: the client left first).")
	for i, rm := range routes {
		for code := range rm.codes {
			if n := rm.codes[code].Load(); n > 0 {
				fmt.Fprintf(w, "firegopher_proxy_requests_total{route=%s,code=\"%d\"} %d\n", quote(labels[i]), code, n)
			}
		}
	}
	header(w, "firegopher_proxy_request_duration_seconds", "histogram", "Time from a request's arrival to the end of its response, by route.")
	for i, rm := range routes {
		l := quote(labels[i])
		var cum uint64
		for b := range rm.buckets {
			cum += rm.buckets[b].Load()
			le := "+Inf"
			if b < len(latencyBounds) {
				le = strconv.FormatFloat(latencyBounds[b], 'g', -1, 64)
			}
			fmt.Fprintf(w, "firegopher_proxy_request_duration_seconds_bucket{route=%s,le=%q} %d\n", l, le, cum)
		}
		fmt.Fprintf(w, "firegopher_proxy_request_duration_seconds_sum{route=%s} %s\n", l, strconv.FormatFloat(time.Duration(rm.sumNS.Load()).Seconds(), 'g', -1, 64))
		fmt.Fprintf(w, "firegopher_proxy_request_duration_seconds_count{route=%s} %d\n", l, rm.count.Load())
	}
	header(w, "firegopher_proxy_requests_in_flight", "gauge", "Requests being answered now.")
	fmt.Fprintf(w, "firegopher_proxy_requests_in_flight %d\n", p.metrics.inflight.Load())
	header(w, "firegopher_proxy_connect_retries_total", "counter", "Requests sent to another backend after a connect failed.")
	fmt.Fprintf(w, "firegopher_proxy_connect_retries_total %d\n", p.metrics.retries.Load())

	t := p.tab.Load()
	var states []*backendState
	if t != nil {
		for _, s := range t.states {
			states = append(states, s)
		}
	}
	slices.SortFunc(states, func(a, b *backendState) int {
		return cmp.Or(strings.Compare(a.key.id, b.key.id), a.key.addr.Compare(b.key.addr))
	})
	type gauge struct{ name, help string }
	for _, g := range []gauge{
		{"firegopher_proxy_backend_healthy", "1 if the backend passes its health checks."},
		{"firegopher_proxy_backend_draining", "1 if the backend gets no new requests."},
		{"firegopher_proxy_backend_in_flight", "Requests outstanding at the backend."},
	} {
		header(w, g.name, "gauge", g.help)
		for _, s := range states {
			m := s.meta.Load()
			var v int64
			switch g.name {
			case "firegopher_proxy_backend_healthy":
				v = b2i(s.status() == healthy)
			case "firegopher_proxy_backend_draining":
				v = b2i(s.draining.Load())
			default:
				v = s.inflight.Load()
			}
			fmt.Fprintf(w, "%s{id=%s,name=%s,service=%s,addr=%s} %d\n", g.name,
				quote(m.ID), quote(m.Name), quote(m.Service), quote(s.addr), v)
		}
	}
}

func header(w *bufio.Writer, name, typ, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// quote writes a label value as the exposition format wants it: in double quotes, with
// backslash, double quote and newline escaped.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
