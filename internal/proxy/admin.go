package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// AdminHandler serves what other processes ask a running proxy (mount it on a private
// listener, e.g. a unix socket in the state dir, never on the public one):
//
//	GET  /routes                    Routes() as JSON, for `proxy routes`
//	GET  /metrics                   ServeMetrics
//	POST /drain?id=ID&timeout=30s   WaitDrained(ID) bounded by timeout (default 30s):
//	                                200 once drained, 504 if requests are still in flight
//
// /drain is how a stopper that marked a VM Draining in the state dir learns the proxy
// has seen it and finished its requests, so that a rolling replacement loses none.
func (p *Proxy) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /routes", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		routes := p.Routes()
		if routes == nil {
			routes = []Route{}
		}
		enc.Encode(routes)
	})
	mux.HandleFunc("GET /metrics", p.ServeMetrics)
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		if id == "" {
			writeError(w, http.StatusBadRequest, "id: required")
			return
		}
		timeout := 30 * time.Second
		if s := r.URL.Query().Get("timeout"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				writeError(w, http.StatusBadRequest, "timeout: not a positive duration: "+s)
				return
			}
			timeout = d
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		if err := p.WaitDrained(ctx, id); err != nil {
			writeError(w, http.StatusGatewayTimeout, err.Error())
			return
		}
		writeError(w, http.StatusOK, "drained")
	})
	return mux
}
