package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/proxy"
	"github.com/firegopher/firegopher/internal/proxy/vmsource"
)

func newProxyCommand(g *globalFlags) *cobra.Command {
	p := &cobra.Command{Use: "proxy", Short: "A reverse proxy that routes HTTP(S) to the VMs serving it"}
	var httpAddr, httpsAddr, cert, key, domain, healthPath string
	serve := &cobra.Command{
		Use:   "serve --domain DOMAIN [--http :80] [--https :443 --cert C --key K]",
		Short: "Route NAME.DOMAIN to that VM and SERVICE.DOMAIN to the service's healthy VMs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := proxy.ValidateDomain(domain); err != nil {
				return fmt.Errorf("--domain: %w", err)
			}
			var tlsConfig *tls.Config
			if httpsAddr != "" {
				pair, err := tls.LoadX509KeyPair(cert, key)
				if err != nil {
					return fmt.Errorf("--cert/--key: %w", err)
				}
				tlsConfig = &tls.Config{Certificates: []tls.Certificate{pair}}
			}
			h, err := g.host()
			if err != nil {
				return err
			}
			// Every listener first: a port in use fails before anything runs.
			httpL, err := net.Listen("tcp", httpAddr)
			if err != nil {
				return fmt.Errorf("--http: %w", err)
			}
			var httpsL net.Listener
			if tlsConfig != nil {
				if httpsL, err = net.Listen("tcp", httpsAddr); err != nil {
					return fmt.Errorf("--https: %w", err)
				}
			}
			sock := vmsource.AdminSocket(h.StateDir)
			os.MkdirAll(filepath.Dir(sock), 0o755)
			os.Remove(sock) // a stale socket of a proxy that died
			adminL, err := net.Listen("unix", sock)
			if err != nil {
				return fmt.Errorf("admin socket: %w", err)
			}
			defer adminL.Close()
			px, err := proxy.New(proxy.Config{Domain: domain, Source: vmsource.Source{Host: h}, Logger: h.Log,
				Health: proxy.HealthCheck{Path: healthPath},
				Waker:  vmsource.Waker{Host: h, SuperviseArgv: g.superviseArgv}})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go px.Run(ctx)
			go http.Serve(adminL, px.AdminHandler())
			go vmsource.AutoStop(ctx, h, px, time.Second) // VMs run with --autostop
			errs := make(chan error, 2)
			go func() { errs <- px.Serve(ctx, httpL, nil) }()
			if httpsL != nil {
				go func() { errs <- px.Serve(ctx, httpsL, tlsConfig) }()
			}
			h.Log.Info("proxy serving", "http", httpL.Addr(), "https", httpsAddr, "domain", domain)
			select {
			case err := <-errs:
				return err
			case <-ctx.Done():
				return nil
			}
		},
	}
	fl := serve.Flags()
	fl.StringVar(&httpAddr, "http", ":80", "address to serve plain HTTP on")
	fl.StringVar(&httpsAddr, "https", "", "address to serve HTTPS (HTTP/2 and HTTP/1.1) on; needs --cert and --key")
	fl.StringVar(&cert, "cert", "", "TLS certificate (PEM)")
	fl.StringVar(&key, "key", "", "TLS private key (PEM)")
	fl.StringVar(&domain, "domain", "", "the domain VM and service names are under (NAME.DOMAIN, SERVICE.DOMAIN)")
	fl.StringVar(&healthPath, "health-path", "", "HTTP path the health check GETs (default: a TCP connect)")

	var asJSON bool
	routes := &cobra.Command{
		Use:   "routes [--json]",
		Short: "What the running proxy routes now, and the health of each backend",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := g.host()
			if err != nil {
				return err
			}
			client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", vmsource.AdminSocket(h.StateDir))
			}}}
			resp, err := client.Get("http://proxy/routes")
			if err != nil {
				return errors.New("no proxy is serving for this state dir (firegopher proxy serve)")
			}
			defer resp.Body.Close()
			if asJSON {
				_, err := io.Copy(os.Stdout, resp.Body)
				return err
			}
			var rs []proxy.Route
			if err := json.NewDecoder(resp.Body).Decode(&rs); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tKIND\tBACKEND\tADDRESS\tHEALTH\tIN FLIGHT")
			for _, r := range rs {
				for _, b := range r.Backends {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", r.Host, r.Kind, b.Name, b.Addr, b.Health, b.InFlight)
				}
			}
			return tw.Flush()
		},
	}
	routes.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	p.AddCommand(serve, routes)
	return p
}
