package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Serve answers requests on l until ctx ends, then shuts down gracefully: the listener
// closes and requests in flight get up to ShutdownTimeout (upgraded connections are the
// caller's to bound: they end with the process). With tlsConfig (its certificates set),
// l speaks TLS and offers HTTP/2 and HTTP/1.1 by ALPN; without, HTTP/1.1 in the clear.
// Run must be running for requests to be routed.
func (p *Proxy) Serve(ctx context.Context, l net.Listener, tlsConfig *tls.Config) error {
	srv, err := p.server(tlsConfig)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			errc <- srv.ServeTLS(l, "", "")
		} else {
			errc <- srv.Serve(l)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// server makes the http.Server Serve runs: the proxy as handler, header and idle
// timeouts (so idle or slow clients cannot hold connections forever), HTTP/2 on TLS.
func (p *Proxy) server(tlsConfig *tls.Config) (*http.Server, error) {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Handshake failures and the like are the clients' problem: debug, not warnings.
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	if tlsConfig == nil {
		return srv, nil
	}
	if len(tlsConfig.Certificates) == 0 && tlsConfig.GetCertificate == nil && tlsConfig.GetConfigForClient == nil {
		return nil, errors.New("proxy: TLS: no certificate")
	}
	srv.TLSConfig = tlsConfig.Clone()
	// net/http's own HTTP/2 (x/net/http2, bundled): x/net/http2 itself would need
	// golang.org/x/text, which go.sum does not have.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 250}
	return srv, nil
}
