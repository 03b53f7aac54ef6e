package proxy

import (
	"context"
	"net/netip"
	"slices"
	"sync"
)

// Backend is one place a route's traffic can go: a VM's HTTP server.
type Backend struct {
	// ID is the backend's stable identity (a VM's ID): health and in-flight counts follow
	// it (with Addr) from one listing to the next.
	ID string `json:"id"`
	// Name routes NAME.DOMAIN to every backend of that name (unless a service has the
	// same name: a service's route wins, so `--name api --service api` joins "api").
	Name string `json:"name,omitempty"`
	// Service routes SERVICE.DOMAIN to every healthy backend of the service.
	Service string `json:"service,omitempty"`
	// Addr is where the backend's HTTP server listens.
	Addr netip.AddrPort `json:"addr"`
	// Draining backends get no new requests; requests in flight to them finish.
	Draining bool `json:"draining,omitempty"`
	// Stopped backends are known but not running: never routed, never health-checked;
	// a Waker may start one when its route has nothing running (autostart).
	Stopped bool `json:"stopped,omitempty"`
}

// Source lists the backends that exist now. The proxy asks it every
// Config.PollInterval and whenever Changes fires.
type Source interface {
	// Backends returns every backend, running or stopped. An error keeps the previous
	// routes (a state dir that cannot be read for a moment must not empty the proxy).
	Backends(ctx context.Context) ([]Backend, error)
	// Changes fires (non-blocking sends on a buffered channel are enough) when the
	// backends may have changed, so a new VM is routed before the next poll. Nil: poll only.
	Changes() <-chan struct{}
}

// Waker starts a stopped backend: the proxy calls it (once per route at a time) when a
// request arrives for a route that has stopped backends and no running, non-draining one,
// and holds the request until a backend of the route is healthy or Config.WakeTimeout
// passes. Wake should return once the start is under way; the new backend reaches the
// proxy through the Source as usual.
type Waker interface {
	Wake(ctx context.Context, b Backend) error
}

// MemorySource is a Source kept in memory: for tests, benchmarks and fixed setups.
type MemorySource struct {
	mu       sync.Mutex
	backends []Backend
	changes  chan struct{}
}

// NewMemorySource returns a source listing bs.
func NewMemorySource(bs ...Backend) *MemorySource {
	return &MemorySource{backends: slices.Clone(bs), changes: make(chan struct{}, 1)}
}

// Backends returns the current list.
func (s *MemorySource) Backends(context.Context) ([]Backend, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.backends), nil
}

// Changes fires after Set.
func (s *MemorySource) Changes() <-chan struct{} { return s.changes }

// Set replaces the list and notifies the proxy.
func (s *MemorySource) Set(bs ...Backend) {
	s.mu.Lock()
	s.backends = slices.Clone(bs)
	s.mu.Unlock()
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// Update changes the backend with the given ID (if any) and notifies the proxy.
func (s *MemorySource) Update(id string, change func(*Backend)) {
	s.mu.Lock()
	for i := range s.backends {
		if s.backends[i].ID == id {
			change(&s.backends[i])
		}
	}
	bs := s.backends
	s.mu.Unlock()
	s.Set(bs...)
}
