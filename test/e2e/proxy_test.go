//go:build e2e

package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/firegopher/firegopher/internal/testutil/nstest"
)

// httpVM starts a detached VM serving /name.txt (its own name) and a websocket echo at
// /ws on port 8000 (testdata/webserver.py).
func (n *testNet) httpVM(t *testing.T, name string, args ...string) string {
	t.Helper()
	server, err := filepath.Abs("testdata/webserver.py")
	if err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"run", "-d", "--name", name, "--copy", server + ":/srv/webserver.py"}, args...)
	argv = append(argv, "--", "sh", "-c", "echo "+name+" > /srv/name.txt && cd /srv && exec python3 webserver.py 8000")
	r := n.fg(t, argv...)
	id := strings.TrimSpace(string(r.stdout))
	if r.code != 0 || len(id) != 12 {
		t.Fatalf("run -d %s: %s", name, r)
	}
	t.Cleanup(func() { n.fg(t, "rm", "-f", id) })
	return id
}

func TestPublishedPorts(t *testing.T) {
	n := newTestNet(t)
	web := n.httpVM(t, "web", "-p", "8080:8000")
	// From the host itself (its loopback) and from outside (another namespace, to the
	// host's address on the link between them).
	if got := n.waitHTTP(t, n.host, "http://127.0.0.1:8080/name.txt"); got != "web\n" {
		t.Fatalf("from the host: %q", got)
	}
	if got := n.waitHTTP(t, n.inet, "http://"+hostSideIP+":8080/name.txt"); got != "web\n" {
		t.Fatalf("from outside: %q", got)
	}
	// The port is taken: a clear error before a second VM starts, nothing left behind.
	before := vmDirs(t)
	r := n.fg(t, "run", "-d", "-p", "8080:8000", "--", "true")
	if r.code != 125 || !strings.Contains(string(r.stderr), "8080") || !strings.Contains(string(r.stderr), "in use") {
		t.Fatalf("a published port in use: %s", r)
	}
	if after := vmDirs(t); len(after) != len(before) {
		t.Fatalf("the refused VM left %v", after)
	}
	if r := n.fg(t, "run", "-p", "80:x", "--", "true"); r.code != 125 || !strings.HasPrefix(string(r.stderr), "firegopher: --publish: ") {
		t.Fatalf("a bad -p: %s", r)
	}
	// A supervisor killed: gc removes its rules.
	var rec struct {
		SupervisorPID int `json:"supervisor_pid"`
	}
	json.Unmarshal(n.fg(t, "inspect", web).stdout, &rec)
	syscall.Kill(rec.SupervisorPID, syscall.SIGKILL)
	waitGone(t, rec.SupervisorPID)
	if r := n.fg(t, "gc"); r.code != 0 {
		t.Fatalf("gc: %s", r)
	}
	if rules := n.nftRuleset(t); strings.Contains(rules, "dnat ip to") {
		t.Fatalf("gc left the published port's rules:\n%s", rules)
	}
}

// proxyProcess is a `firegopher proxy serve` of a test.
type proxyProcess struct {
	cmd    *exec.Cmd
	log    *syncBuffer
	caFile string // the certificate it serves HTTPS with, self-signed for *.fg.local
}

// proxyServe runs `firegopher proxy serve` in the test's host namespace, HTTP on 8088 and
// HTTPS (HTTP/2) on 8443, until the test ends.
func (n *testNet) proxyServe(t *testing.T) *proxyProcess {
	t.Helper()
	dir := t.TempDir()
	p := &proxyProcess{log: &syncBuffer{}, caFile: filepath.Join(dir, "cert.pem")}
	keyFile := filepath.Join(dir, "key.pem")
	writeSelfSigned(t, p.caFile, keyFile, "*.fg.local")
	p.cmd = exec.Command("ip", "netns", "exec", n.host, filepath.Join(binDir, "firegopher"), "proxy", "serve",
		"--http", "127.0.0.1:8088", "--https", "127.0.0.1:8443", "--cert", p.caFile, "--key", keyFile, "--domain", "fg.local")
	p.cmd.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Signal(syscall.SIGTERM); p.cmd.Wait() })
	return p
}

// curlProxy asks the proxy for path with Host host (plain HTTP), bounded by seconds.
func (n *testNet) curlProxy(host, path string, seconds int) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", n.host, "curl", "-sf", "-m", strconv.Itoa(seconds),
		"-H", "Host: "+host, "http://127.0.0.1:8088"+path).Output()
	return string(out), err
}

// loadProxy sends total GETs of host's /name.txt through the proxy, concurrent at a time
// on keep-alive connections, calls during() once a first batch has been answered (so that
// it lands mid-load) and returns how many responses had each status ("error" for none) and
// each body.
func (n *testNet) loadProxy(t *testing.T, host string, total, concurrent int, during func()) (codes, bodies map[string]int) {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: nstest.DialContextIn(n.host), MaxIdleConnsPerHost: concurrent}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	codes, bodies = map[string]int{}, map[string]int{}
	answered := 0
	var workers, hooks sync.WaitGroup
	next := make(chan struct{})
	go func() {
		for range total {
			next <- struct{}{}
		}
		close(next)
	}()
	for range concurrent {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for range next {
				code, body := "error", ""
				req, _ := http.NewRequest("GET", "http://127.0.0.1:8088/name.txt", nil)
				req.Host = host
				if resp, err := client.Do(req); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					code, body = strconv.Itoa(resp.StatusCode), strings.TrimSpace(string(b))
				}
				mu.Lock()
				codes[code]++
				if code == "200" {
					bodies[body]++
				}
				if answered++; answered == 4*concurrent && during != nil {
					hooks.Add(1)
					go func() { defer hooks.Done(); during() }()
				}
				mu.Unlock()
			}
		}()
	}
	workers.Wait()
	hooks.Wait()
	return codes, bodies
}

// routeHealth is each backend's health per routed host, as `proxy routes --json` says.
func (n *testNet) routeHealth(t *testing.T) map[string]map[string]string {
	t.Helper()
	r := n.fg(t, "proxy", "routes", "--json")
	var routes []struct {
		Host     string `json:"host"`
		Backends []struct {
			Name   string `json:"name"`
			Health string `json:"health"`
		} `json:"backends"`
	}
	if err := json.Unmarshal(r.stdout, &routes); r.code != 0 || err != nil {
		t.Fatalf("proxy routes --json: %v %s", err, r)
	}
	out := map[string]map[string]string{}
	for _, rt := range routes {
		out[rt.Host] = map[string]string{}
		for _, b := range rt.Backends {
			out[rt.Host][b.Name] = b.Health
		}
	}
	return out
}

func TestProxyFollowsTheVMs(t *testing.T) {
	n := newTestNet(t)
	api1 := n.httpVM(t, "api1", "--service", "api", "--http-port", "8000")
	api2 := n.httpVM(t, "api2", "--service", "api", "--http-port", "8000")
	px := n.proxyServe(t)

	// Both VMs come into the rotation once healthy; requests spread over both.
	waitBoth := func(what string) {
		seen := map[string]bool{}
		deadline := time.Now().Add(2 * time.Minute)
		for len(seen) < 2 {
			if out, err := n.curlProxy("api.fg.local", "/name.txt", 5); err == nil {
				seen[strings.TrimSpace(out)] = true
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the service never reached both VMs (saw %v); proxy log:\n%s", what, seen, px.log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitBoth("at start")
	if out, err := n.curlProxy("api2.fg.local", "/name.txt", 5); err != nil || out != "api2\n" {
		t.Fatalf("by name: %q %v", out, err)
	}
	if health := n.routeHealth(t); health["api.fg.local"]["api1"] != "healthy" || health["api.fg.local"]["api2"] != "healthy" {
		t.Fatalf("proxy routes: %v", health)
	}
	if out, err := n.curlProxy("nope.fg.local", "/", 5); err == nil {
		t.Fatalf("an unknown host was answered: %q", out)
	}

	whole := t // the new proxy serves the subtests that follow this one
	t.Run("a proxy killed and started again rebuilds its routes", func(t *testing.T) {
		px.cmd.Process.Kill() // ip netns exec execs: this is the proxy itself
		px.cmd.Wait()
		px = n.proxyServe(whole)
		waitBoth("after the proxy's restart")
	})

	t.Run("https and http2", func(t *testing.T) {
		out, err := exec.Command("ip", "netns", "exec", n.host, "curl", "-sS", "-m", "10", "--cacert", px.caFile,
			"--resolve", "api1.fg.local:8443:127.0.0.1", "-w", "%{http_version}", "https://api1.fg.local:8443/name.txt").CombinedOutput()
		if err != nil || string(out) != "api1\n2" {
			t.Fatalf("HTTPS through the proxy: %q %v (want the body, then HTTP version 2)", out, err)
		}
	})

	t.Run("websocket echo", func(t *testing.T) {
		client, _ := filepath.Abs("testdata/wsclient.py")
		out, err := exec.Command("ip", "netns", "exec", n.host, "python3", client, "127.0.0.1:8088", "api1.fg.local",
			"hello", "through the proxy").CombinedOutput()
		if err != nil || string(out) != "hello\nthrough the proxy\n" {
			t.Fatalf("websocket echo: %q %v", out, err)
		}
	})

	t.Run("a VM killed with -9 leaves the rotation", func(t *testing.T) {
		var rec struct {
			VMMPID int `json:"vmm_pid"`
		}
		json.Unmarshal(n.fg(t, "inspect", api1).stdout, &rec)
		if rec.VMMPID == 0 {
			t.Fatal("inspect gave no vmm_pid")
		}
		var killedAt time.Time
		codes, _ := n.loadProxy(t, "api.fg.local", 400, 16, func() {
			killedAt = time.Now()
			syscall.Kill(rec.VMMPID, syscall.SIGKILL)
		})
		// Only requests in flight to it may fail: at most one per concurrent client.
		if failed := 400 - codes["200"]; failed > 16 || codes["200"]+failed != 400 {
			t.Fatalf("%d of 400 requests failed around the kill (codes %v); proxy log:\n%s", failed, codes, px.log)
		}
		// It leaves within a health-check interval (1 s) and the source's poll (0.5 s).
		for n.routeHealth(t)["api.fg.local"]["api1"] == "healthy" {
			if time.Since(killedAt) > 3*time.Second {
				t.Fatalf("api1 still healthy %s after its VM was killed: %v", time.Since(killedAt), n.routeHealth(t))
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Started again (a fresh boot of the same machine), it rejoins.
		n.fg(t, "wait", api1)
		if r := n.fg(t, "start", api1); r.code != 0 {
			t.Fatalf("start: %s", r)
		}
		waitBoth("after start")
	})

	t.Run("a stop during load loses no request", func(t *testing.T) {
		codes, bodies := n.loadProxy(t, "api.fg.local", 2000, 16, func() {
			if r := n.fg(t, "stop", "-t", "10", api2); r.code != 0 {
				t.Errorf("stop: %s", r)
			}
		})
		if codes["200"] != 2000 {
			t.Fatalf("%d of 2000 requests failed during the stop (codes %v); proxy log:\n%s", 2000-codes["200"], codes, px.log)
		}
		if bodies["api1"] == 0 || bodies["api2"] == 0 {
			t.Errorf("the load was not spread over both VMs: %v", bodies)
		}
		if out, err := n.curlProxy("api.fg.local", "/name.txt", 5); err != nil || out != "api1\n" {
			t.Fatalf("after the stop only api1 serves: %q %v", out, err)
		}
	})

	t.Run("autostop then autostart", func(t *testing.T) {
		lazy := n.httpVM(t, "lazy", "--http-port", "8000", "--autostart", "--autostop", "5s")
		if got := n.waitProxied(t, "lazy.fg.local", time.Minute); got != "lazy\n" {
			t.Fatalf("lazy: %q", got)
		}
		// Idle for its 5 s, the proxy stops it.
		r := runFiregopherFor(t, time.Minute, []string{"ip", "netns", "exec", n.host}, "wait", lazy)
		if r.code != 0 {
			t.Fatalf("wait for the autostop: %s", r)
		}
		// The proxy sees the exit at its next read of the state dir (twice a second).
		for stoppedAt := time.Now(); n.routeHealth(t)["lazy.fg.local"]["lazy"] != "stopped"; {
			if time.Since(stoppedAt) > 3*time.Second {
				t.Fatalf("after the autostop, proxy routes says lazy is %q", n.routeHealth(t)["lazy.fg.local"]["lazy"])
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The first request wakes it and is held until it serves.
		if out, err := n.curlProxy("lazy.fg.local", "/name.txt", 60); err != nil || out != "lazy\n" {
			t.Fatalf("autostart: %q %v; proxy log:\n%s", out, err, px.log)
		}
	})
}

// waitProxied polls host's /name.txt through the proxy until it answers, bounded.
func (n *testNet) waitProxied(t *testing.T, host string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, err := n.curlProxy(host, "/name.txt", 5)
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered through the proxy: %v", host, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// syncBuffer is a log many goroutines write (a process's stdout and stderr).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeSelfSigned writes a self-signed certificate for dnsName and its key (PEM).
func writeSelfSigned(t *testing.T, certFile, keyFile, dnsName string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: dnsName},
		DNSNames: []string{dnsName}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}
