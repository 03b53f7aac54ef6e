// Command proxy runs internal/proxy in front of one fixed backend, for bench/proxy/run.sh:
// the route NAME.DOMAIN goes to -backend, with the proxy's defaults (health checks,
// access log) as `firegopher proxy serve` would run it. With -bare it runs a plain
// httputil.ReverseProxy instead (no routing, health, log or metrics): the floor of what
// net/http costs per request.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/firegopher/firegopher/internal/proxy"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	backend := flag.String("backend", "", "the backend's address, IP:PORT")
	name := flag.String("name", "bench", "the route's name")
	domain := flag.String("domain", "fg.bench", "the proxy's domain")
	accessLog := flag.String("access-log", "", "file for the access log (JSON lines); empty: none")
	metrics := flag.String("metrics", "", "address to serve /metrics on; empty: none")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here until the proxy stops")
	bare := flag.Bool("bare", false, "run a plain httputil.ReverseProxy to -backend instead")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "proxy: -cpuprofile:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	var err error
	if *bare {
		err = runBare(*listen, *backend)
	} else {
		err = run(*listen, *backend, *name, *domain, *accessLog, *metrics)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(listen, backend, name, domain, accessLog, metrics string) error {
	addr, err := netip.ParseAddrPort(backend)
	if err != nil {
		return fmt.Errorf("-backend: %w", err)
	}
	logger := slog.New(slog.DiscardHandler)
	if accessLog != "" {
		f, err := os.OpenFile(accessLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("-access-log: %w", err)
		}
		defer f.Close()
		logger = slog.New(slog.NewJSONHandler(f, nil))
	}
	p, err := proxy.New(proxy.Config{
		Domain: domain,
		Source: proxy.NewMemorySource(proxy.Backend{ID: name, Name: name, Addr: addr}),
		Logger: logger,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	if metrics != "" {
		ml, err := net.Listen("tcp", metrics)
		if err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
		go http.Serve(ml, http.HandlerFunc(p.ServeMetrics))
	}
	go p.Run(ctx)
	return p.Serve(ctx, l, nil)
}

func runBare(listen, backend string) error {
	if _, err := netip.ParseAddrPort(backend); err != nil {
		return fmt.Errorf("-backend: %w", err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: backend})
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 512, DisableCompression: true}
	rp.ErrorLog = log.New(io.Discard, "", 0)
	return http.ListenAndServe(listen, rp)
}
