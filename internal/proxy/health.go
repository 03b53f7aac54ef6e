package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// watchHealth checks b now and then every Health.Interval until ctx ends.
func (p *Proxy) watchHealth(ctx context.Context, b *backendState) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := p.check(ctx, b)
		if ctx.Err() != nil {
			return
		}
		p.record(b, err, false)
		t.Reset(p.cfg.Health.Interval)
	}
}

// check is one health check: a TCP connect, or an HTTP GET of Health.Path.
func (p *Proxy) check(ctx context.Context, b *backendState) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Health.Timeout)
	defer cancel()
	if p.cfg.Health.Path == "" {
		c, err := p.checkDialer.DialContext(ctx, "tcp", b.addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+p.cfg.Health.Path, nil)
	if err != nil {
		return err
	}
	req.Host = b.checkHost(p.cfg.Domain)
	req.Header.Set("User-Agent", "firegopher-proxy-health")
	resp, err := p.checkClient.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("GET %s: %s", p.cfg.Health.Path, resp.Status)
	}
	return nil
}

// record moves b's health after a check (or, passive, after a request's connect failed:
// that takes the backend out at once, since a refused or timed-out connect is the plainest
// sign that nothing listens). Changes are logged and wake those waiting on the table.
func (p *Proxy) record(b *backendState, err error, passive bool) {
	b.mu.Lock()
	before := b.status()
	after := before
	if !passive {
		b.lastCheck = time.Now()
	}
	if err == nil {
		b.lastErr = ""
		b.falls = 0
		b.rises++
		if before == unknown || before == unhealthy && b.rises >= p.cfg.Health.Rise {
			after = healthy
		}
	} else {
		b.lastErr = err.Error()
		b.rises = 0
		b.falls++
		if before == unknown || passive || before == healthy && b.falls >= p.cfg.Health.Fall {
			after = unhealthy
		}
	}
	b.health.Store(int32(after))
	b.mu.Unlock()
	if after == before {
		return
	}
	m := b.meta.Load()
	attrs := []any{"id", m.ID, "name", m.Name, "service", m.Service, "addr", b.addr}
	if after == healthy {
		p.log.Info("proxy: backend healthy", attrs...)
	} else {
		how := "health check"
		if passive {
			how = "connect"
		}
		p.log.Warn("proxy: backend unhealthy", append(attrs, "by", how, "error", err)...)
	}
	p.notify()
}

func newCheckClient(d *net.Dialer) *http.Client {
	return &http.Client{
		// A fresh connection per check: a check must prove the backend still accepts.
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
