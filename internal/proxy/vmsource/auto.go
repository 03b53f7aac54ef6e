package vmsource

import (
	"context"
	"fmt"
	"time"

	"github.com/firegopher/firegopher/internal/proxy"
	"github.com/firegopher/firegopher/internal/state"
	"github.com/firegopher/firegopher/internal/supervisor"
)

// Waker starts an exited VM that asked for it (run -d --autostart) when the proxy has a
// request for its name or service and nothing running to send it to.
type Waker struct {
	Host *supervisor.Host
	// SuperviseArgv is the command line of a detached supervisor for a VM id.
	SuperviseArgv func(id string) []string
}

func (w Waker) Wake(_ context.Context, b proxy.Backend) error {
	st, err := w.Host.State()
	if err != nil {
		return err
	}
	rec, err := st.Get(b.ID)
	if err != nil {
		return err
	}
	if rec.Machine == nil || !rec.Machine.AutoStart {
		return fmt.Errorf("VM %s was not run with --autostart", b.ID)
	}
	return w.Host.Start(rec, w.SuperviseArgv(b.ID))
}

// StopTimeout is how long an idle VM's workload gets to end after SIGTERM.
const StopTimeout = 10 * time.Second

// AutoStop stops every running VM that asked for it (--autostop D) once the proxy has sent
// it no request for D (counted from its start when it has had none) and has none in
// flight. It checks every interval until ctx ends.
func AutoStop(ctx context.Context, h *supervisor.Host, px *proxy.Proxy, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, rec := range idleVMs(h, px, time.Now()) {
			h.Log.Info("autostop: stopping idle VM", "vm", rec.ID, "name", rec.Name, "idle_for", rec.Machine.AutoStop)
			if err := Drain(h, rec, StopTimeout); err != nil {
				h.Log.Warn("autostop: drain", "vm", rec.ID, "error", err)
			}
			if err := h.Stop(rec, StopTimeout); err != nil {
				h.Log.Warn("autostop: stop", "vm", rec.ID, "error", err)
			}
		}
	}
}

// idleVMs are the running VMs with --autostop whose idle time has run out at now.
func idleVMs(h *supervisor.Host, px *proxy.Proxy, now time.Time) []*state.VM {
	st, err := h.State()
	if err != nil {
		return nil
	}
	recs, err := st.List()
	if err != nil {
		return nil
	}
	return idle(recs, px.Routes(), now, supervisor.Running)
}

// idle picks from recs the VMs with --autostop that are running, not draining, healthy
// (one still booting, or broken, is not judged idle: it could not have served), have no
// request in flight and none for their AutoStop (counted from their start if they have had
// none).
func idle(recs []state.VM, routes []proxy.Route, now time.Time, running func(*state.VM) bool) []*state.VM {
	type use struct {
		last     time.Time
		inFlight int64
		healthy  bool
	}
	uses := map[string]use{} // a VM is a backend of its name's route and its service's
	for _, r := range routes {
		for _, b := range r.Backends {
			u := uses[b.ID]
			if b.LastRequest.After(u.last) {
				u.last = b.LastRequest
			}
			u.inFlight = max(u.inFlight, b.InFlight)
			u.healthy = u.healthy || b.Health == "healthy"
			uses[b.ID] = u
		}
	}
	var out []*state.VM
	for i := range recs {
		r := &recs[i]
		if r.Machine == nil || r.Machine.AutoStop == 0 || r.Status != state.Running || r.Draining || !running(r) {
			continue
		}
		u := uses[r.ID]
		last := r.StartedAt
		if u.last.After(last) {
			last = u.last
		}
		if u.healthy && u.inFlight == 0 && now.Sub(last) >= r.Machine.AutoStop {
			out = append(out, r)
		}
	}
	return out
}
