package proxy

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// health is a running backend's state as the checks see it.
type health int32

const (
	unknown   health = iota // appeared, not checked yet
	healthy                 // routed
	unhealthy               // not routed until Rise checks pass
)

func (h health) String() string {
	switch h {
	case healthy:
		return "healthy"
	case unhealthy:
		return "unhealthy"
	}
	return "unknown"
}

// stateKey identifies a running backend across listings: a VM that comes back at another
// address starts afresh.
type stateKey struct {
	id   string
	addr netip.AddrPort
}

// backendState is what the proxy knows of one running backend. Routes share it, requests
// hold it while in flight, and it outlives the table it was listed in.
type backendState struct {
	key      stateKey
	addr     string // key.addr as text: the outbound URL's host
	meta     atomic.Pointer[Backend]
	draining atomic.Bool
	inflight atomic.Int64
	health   atomic.Int32
	lastUsed atomic.Int64 // unix nanoseconds of the last request routed here

	mu        sync.Mutex // guards the check bookkeeping below
	rises     int
	falls     int
	lastErr   string
	lastCheck time.Time

	stop context.CancelFunc // ends its health checks
}

func (b *backendState) status() health { return health(b.health.Load()) }

// checkHost is the Host header of its health checks: the route a client would use.
func (b *backendState) checkHost(domain string) string {
	m := b.meta.Load()
	if m.Name != "" && isDNSLabel(m.Name) {
		return strings.ToLower(m.Name) + "." + domain
	}
	return strings.ToLower(m.Service) + "." + domain
}

// Route kinds.
const (
	KindService = "service"
	KindName    = "name"
)

// route is one routed host and where its requests may go.
type route struct {
	label     string // the host's first label
	host      string // label.DOMAIN
	kind      string
	backends  []*backendState // running ones, draining included (pick skips them)
	stopped   []Backend       // wakeable
	active    int             // running, not draining
	timeout   time.Duration
	transport *http.Transport // the one whose ResponseHeaderTimeout is timeout
	metrics   *routeMetrics
	next      atomic.Uint64 // where the next pick starts, so that ties rotate
}

// table is one immutable snapshot of the routes; refresh swaps in a new one.
type table struct {
	routes map[string]*route
	states map[stateKey]*backendState
}

// rank orders candidates: healthy first; unknown (not checked yet) only when no backend
// of the route is healthy, so that a proxy just started answers at once; unhealthy never.
func rank(b *backendState) int {
	switch b.status() {
	case healthy:
		return 2
	case unknown:
		return 1
	}
	return 0
}

// pick chooses the backend with the fewest requests outstanding among the best-ranked
// non-draining ones not yet tried, counting the request in its in-flight total. Ties
// rotate. The in-flight count is raised before draining is checked again, so a drain
// that has seen in-flight reach zero cannot miss a request picked from an older table.
func (r *route) pick(tried []*backendState) *backendState {
	n := uint64(len(r.backends))
	if n == 0 {
		return nil
	}
	for {
		var best *backendState
		bestRank := 0
		var bestLoad int64
		start := r.next.Add(1)
		for i := uint64(0); i < n; i++ {
			b := r.backends[(start+i)%n]
			rk := rank(b)
			if rk == 0 || b.draining.Load() || slices.Contains(tried, b) {
				continue
			}
			load := b.inflight.Load()
			if best == nil || rk > bestRank || rk == bestRank && load < bestLoad {
				best, bestRank, bestLoad = b, rk, load
			}
		}
		if best == nil {
			return nil
		}
		best.inflight.Add(1)
		if !best.draining.Load() {
			return best
		}
		best.inflight.Add(-1)
		tried = append(tried[:len(tried):len(tried)], best)
	}
}

// ready reports whether a request would find a healthy, non-draining backend.
func (r *route) ready() bool {
	for _, b := range r.backends {
		if b.status() == healthy && !b.draining.Load() {
			return true
		}
	}
	return false
}
