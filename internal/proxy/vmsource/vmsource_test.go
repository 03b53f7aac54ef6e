package vmsource

import (
	"slices"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/proxy"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/state"
)

func TestAnExitedAutostartVMIsAStoppedBackend(t *testing.T) {
	m := &spec.Machine{HTTPPort: 8000, Service: "api", AutoStart: true}
	exited := state.VM{ID: "a1", Name: "api1", Machine: m, Detached: true, Status: state.Exited}
	b, ok := backend(&exited)
	if !ok || !b.Stopped || b.Name != "api1" || b.Service != "api" {
		t.Fatalf("exited --autostart VM: %+v %v", b, ok)
	}
	plain := exited
	plain.Machine = &spec.Machine{HTTPPort: 8000, Service: "api"}
	if b, ok := backend(&plain); ok {
		t.Fatalf("exited VM without --autostart is listed: %+v", b)
	}
}

func TestIdlePicksOnlyVMsIdleForTheirAutostop(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	vm := func(id string, autostop time.Duration, started time.Time) state.VM {
		return state.VM{ID: id, Status: state.Running, StartedAt: started,
			Machine: &spec.Machine{HTTPPort: 8000, AutoStop: autostop}}
	}
	recs := []state.VM{
		vm("never-used", time.Minute, now.Add(-2*time.Minute)),
		vm("just-started", time.Minute, now.Add(-10*time.Second)),
		vm("used-recently", time.Minute, now.Add(-time.Hour)),
		vm("used-long-ago", time.Minute, now.Add(-time.Hour)),
		vm("busy", time.Minute, now.Add(-time.Hour)),
		vm("no-autostop", 0, now.Add(-time.Hour)),
		vm("not-ours", time.Minute, now.Add(-time.Hour)),
		vm("unhealthy", time.Minute, now.Add(-time.Hour)),
	}
	draining := vm("draining", time.Minute, now.Add(-time.Hour))
	draining.Draining = true
	recs = append(recs, draining)
	bs := func(id string, last time.Time, inFlight int64) proxy.BackendStatus {
		return proxy.BackendStatus{Backend: proxy.Backend{ID: id}, LastRequest: last, InFlight: inFlight, Health: "healthy"}
	}
	routes := []proxy.Route{
		{Host: "a.fg", Backends: []proxy.BackendStatus{bs("used-recently", now.Add(-2*time.Hour), 0),
			bs("used-long-ago", now.Add(-2*time.Minute), 0), bs("busy", now.Add(-time.Hour), 1)}},
		// The same VM through its service's route: the latest use counts.
		{Host: "svc.fg", Backends: []proxy.BackendStatus{bs("used-recently", now.Add(-5*time.Second), 0)}},
		{Host: "b.fg", Backends: []proxy.BackendStatus{bs("never-used", time.Time{}, 0), bs("just-started", time.Time{}, 0),
			bs("no-autostop", time.Time{}, 0), bs("not-ours", time.Time{}, 0), bs("draining", time.Time{}, 0),
			{Backend: proxy.Backend{ID: "unhealthy"}, Health: "unhealthy"}}},
	}
	running := func(r *state.VM) bool { return r.ID != "not-ours" }
	var got []string
	for _, r := range idle(recs, routes, now, running) {
		got = append(got, r.ID)
	}
	if want := []string{"never-used", "used-long-ago"}; !slices.Equal(got, want) {
		t.Fatalf("idle = %v, want %v", got, want)
	}
}
