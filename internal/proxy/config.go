package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Config is what New needs. Zero durations and counts take the defaults named.
type Config struct {
	// Domain is the suffix routed hosts end in: NAME.DOMAIN and SERVICE.DOMAIN. Required.
	Domain string
	// Source lists the backends. Required.
	Source Source
	// Logger gets one line per request ("request") and the proxy's own events. Nil: discard.
	Logger *slog.Logger
	// PollInterval is how often Source is listed besides its Changes (default 500ms).
	PollInterval time.Duration
	// Health configures the active health checks.
	Health HealthCheck
	// DialTimeout bounds one connect to a backend (default 2s); a connect that fails is
	// retried on another backend of the route.
	DialTimeout time.Duration
	// MaxConnectAttempts bounds the backends tried for one request when connects fail
	// (default 3).
	MaxConnectAttempts int
	// Timeout is how long a backend may take to answer (from the end of sending it the
	// request, body included, to its response headers) before the client gets a 504
	// (default 60s). Response bodies, streams and upgraded connections are not bounded by
	// it.
	Timeout time.Duration
	// RouteTimeouts overrides Timeout per route, keyed by the route's label (the service
	// or VM name, without the domain).
	RouteTimeouts map[string]time.Duration
	// Waker, if set, starts a stopped backend of a route with nothing running (autostart).
	Waker Waker
	// WakeTimeout bounds how long a request waits for a woken backend (default 30s).
	WakeTimeout time.Duration
	// ShutdownTimeout bounds how long Serve waits for requests in flight when its context
	// ends (default 10s).
	ShutdownTimeout time.Duration
}

// HealthCheck configures the active checks that every running backend gets.
type HealthCheck struct {
	// Interval between two checks of one backend (default 1s). A backend's first check
	// runs as soon as it appears.
	Interval time.Duration
	// Timeout bounds one check (default 1s).
	Timeout time.Duration
	// Path, if set, makes checks an HTTP GET of this path (with Host NAME.DOMAIN) that must
	// answer 2xx or 3xx; otherwise a check is a TCP connect.
	Path string
	// Rise is how many checks in a row must pass for an unhealthy backend to return
	// (default 1); Fall how many must fail for a healthy one to leave (default 2). A new
	// backend's first check decides alone, and a failed connect by a request takes the
	// backend out at once.
	Rise, Fall int
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.PollInterval, 500*time.Millisecond)
	def(&c.DialTimeout, 2*time.Second)
	def(&c.Timeout, 60*time.Second)
	def(&c.WakeTimeout, 30*time.Second)
	def(&c.ShutdownTimeout, 10*time.Second)
	def(&c.Health.Interval, time.Second)
	def(&c.Health.Timeout, time.Second)
	if c.MaxConnectAttempts == 0 {
		c.MaxConnectAttempts = 3
	}
	if c.Health.Rise == 0 {
		c.Health.Rise = 1
	}
	if c.Health.Fall == 0 {
		c.Health.Fall = 2
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Domain = strings.TrimSuffix(strings.ToLower(c.Domain), ".")
}

func (c *Config) validate() error {
	if err := ValidateDomain(c.Domain); err != nil {
		return fmt.Errorf("proxy: Domain: %w", err)
	}
	if c.Source == nil {
		return errors.New("proxy: Source: required")
	}
	for name, d := range map[string]time.Duration{
		"PollInterval": c.PollInterval, "DialTimeout": c.DialTimeout, "Timeout": c.Timeout,
		"WakeTimeout": c.WakeTimeout, "ShutdownTimeout": c.ShutdownTimeout,
		"Health.Interval": c.Health.Interval, "Health.Timeout": c.Health.Timeout,
	} {
		if d < 0 {
			return fmt.Errorf("proxy: %s: %s is negative", name, d)
		}
	}
	if c.MaxConnectAttempts < 1 || c.Health.Rise < 1 || c.Health.Fall < 1 {
		return errors.New("proxy: MaxConnectAttempts, Health.Rise and Health.Fall must be at least 1")
	}
	if c.Health.Path != "" && !strings.HasPrefix(c.Health.Path, "/") {
		return fmt.Errorf("proxy: Health.Path: %q does not start with /", c.Health.Path)
	}
	for label, d := range c.RouteTimeouts {
		if !isDNSLabel(label) {
			return fmt.Errorf("proxy: RouteTimeouts: %q is not a route name (one DNS label)", label)
		}
		if d <= 0 {
			return fmt.Errorf("proxy: RouteTimeouts: %s: %s is not positive", label, d)
		}
	}
	return nil
}

// ValidateDomain reports whether d can be the proxy's domain: a DNS name of one or more
// labels (letters, digits, hyphens; 1–63 characters each, not starting or ending with a
// hyphen), at most 253 characters. A trailing dot is allowed.
func ValidateDomain(d string) error {
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return errors.New("empty domain")
	}
	if len(d) > 253 {
		return fmt.Errorf("%q is longer than 253 characters", d)
	}
	for _, label := range strings.Split(d, ".") {
		if !isDNSLabel(label) {
			return fmt.Errorf("%q is not a valid DNS name (label %q)", d, label)
		}
	}
	return nil
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
