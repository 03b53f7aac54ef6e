// Package vmsource feeds the reverse proxy from a state directory: every running VM that
// serves HTTP (an --http-port, optionally in a --service) is a backend; a VM being stopped
// is draining. It also lets `stop` tell a running proxy to drain a VM first.
package vmsource

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/firegopher/firegopher/internal/proxy"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/supervisor"
)

// AdminSocket is where `firegopher proxy serve` answers `proxy routes` and drain requests.
func AdminSocket(stateDir string) string { return filepath.Join(stateDir, "proxy", "admin.sock") }

// Source lists a state directory's HTTP-serving VMs.
type Source struct{ Host *supervisor.Host }

func (s Source) Backends(context.Context) ([]proxy.Backend, error) {
	st, err := s.Host.State()
	if err != nil {
		return nil, err
	}
	recs, err := st.List()
	if err != nil {
		return nil, err
	}
	var out []proxy.Backend
	for i := range recs {
		if b, ok := backend(&recs[i]); ok {
			out = append(out, b)
		}
	}
	return out, nil
}

// Changes: none pushed; the proxy polls (twice a second), which routes a new VM in time.
func (s Source) Changes() <-chan struct{} { return nil }

func backend(r *state.VM) (proxy.Backend, bool) {
	m := r.Machine
	if m == nil || m.HTTPPort == 0 {
		return proxy.Backend{}, false
	}
	if m.AutoStart && r.Detached && r.Status == state.Exited {
		// Known, so that a request for its name or service can start it.
		return proxy.Backend{ID: r.ID, Name: nameOf(r), Service: m.Service, Stopped: true}, true
	}
	if r.Status != state.Running || r.Network == nil || !supervisor.Running(r) {
		return proxy.Backend{}, false
	}
	guest, err := netip.ParseAddr(r.Network.Guest)
	if err != nil {
		return proxy.Backend{}, false
	}
	return proxy.Backend{ID: r.ID, Name: nameOf(r), Service: m.Service, Addr: netip.AddrPortFrom(guest, m.HTTPPort), Draining: r.Draining}, true
}

func nameOf(r *state.VM) string {
	if r.Name != "" {
		return r.Name
	}
	return r.ID
}

// Drain marks the VM draining and, if a proxy runs for this state directory, waits until it
// has no request in flight to it (bounded by timeout), so a stop loses no request.
func Drain(h *supervisor.Host, rec *state.VM, timeout time.Duration) error {
	if rec.Machine == nil || rec.Machine.HTTPPort == 0 {
		return nil
	}
	st, err := h.State()
	if err != nil {
		return err
	}
	if _, err := st.Update(rec.ID, func(r *state.VM) error { r.Draining = true; return nil }); err != nil {
		return err
	}
	sock := AdminSocket(h.StateDir)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: timeout + 5*time.Second}
	resp, err := client.Post(fmt.Sprintf("http://proxy/drain?id=%s&timeout=%s", rec.ID, timeout), "text/plain", nil)
	if err != nil {
		return nil // no proxy running: nothing routes to it
	}
	resp.Body.Close()
	return nil
}
