// Package ocitest runs an in-process OCI registry for tests.
package ocitest

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Registry is an in-memory registry on 127.0.0.1, spoken to over plain HTTP (which
// loopback registries may), that counts what it serves.
type Registry struct {
	Host string // host:port, the first part of a reference to it

	mu       sync.Mutex
	requests int
	gets     map[string]int // path of GET /v2/.../blobs/... → count
}

// New starts a registry that stops when the test ends. wrap, if set, sits between the
// client and the registry (to corrupt or stall responses). It also points DOCKER_CONFIG
// at an empty directory, so that no credentials of the machine running the tests are used.
func New(t testing.TB, wrap func(http.Handler) http.Handler) *Registry {
	t.Helper()
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	r := &Registry{gets: map[string]int{}}
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	inner := h
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests++
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.gets[req.URL.Path]++
		}
		r.mu.Unlock()
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// Requests is how many requests the registry has served since the last ResetCounts.
func (r *Registry) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// BlobGets counts the blob downloads since the last ResetCounts, by request path.
func (r *Registry) BlobGets() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.gets))
	for k, v := range r.gets {
		out[k] = v
	}
	return out
}

// ResetCounts zeroes the counts.
func (r *Registry) ResetCounts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests, r.gets = 0, map[string]int{}
}
