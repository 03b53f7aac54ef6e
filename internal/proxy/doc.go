// Package proxy is firegopher's HTTP reverse proxy: it routes requests by Host to the
// VMs a Source lists and follows them as they come and go.
//
// Routing: NAME.DOMAIN goes to the backends of that name, SERVICE.DOMAIN to every healthy
// backend of the service; a service shadows a VM of the same name (so `--name api
// --service api` and `--name api2 --service api` are both behind api.DOMAIN). Other
// hosts get 404.
//
// Following the VMs: Run lists the Source every PollInterval (500ms) and whenever its
// Changes channel fires, and keeps a copy-on-write table of routes; a backend keeps its
// health and in-flight count across listings by ID and address. Every running backend is
// checked now and then every Health.Interval (TCP connect, or HTTP GET of Health.Path); a
// request whose connect fails takes its backend out at once.
//
// Balancing: least outstanding requests among healthy, non-draining backends; ties
// rotate. A connect failure moves the request to another backend (at most
// MaxConnectAttempts): nothing has been sent then, and the body is provably unread (see
// balancer). Clients get 404 for unknown hosts, 503 when a route has no healthy backend,
// 502 when every connect failed or the backend's answer was broken, and 504 when it did
// not answer within the route's timeout; each with a one-line plain-text reason.
//
// Draining: a backend listed Draining gets no new request and its requests in flight
// finish. A stopper that wants a lossless stop marks the VM draining in the Source,
// waits until the proxy has seen it and its requests are done (WaitDrained in process;
// from another process, at least one PollInterval after the mark plus the stop timeout),
// then stops the VM.
//
// Autostart: with a Waker, a request for a route that has only stopped backends wakes
// one and waits (up to WakeTimeout) for the route to become healthy.
//
// Streaming, chunked bodies and upgrades (websockets) are net/http/httputil's; streamed
// responses (chunked, server-sent events) are flushed on every write, others within 5ms.
// Request bodies stream to the backend while the response streams back (full duplex).
// Serve adds HTTP/2 over TLS.
package proxy
