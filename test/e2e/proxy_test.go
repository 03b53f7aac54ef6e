//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// httpVM starts a detached VM serving /name.txt (its own name) on port 8000.
func (n *testNet) httpVM(t *testing.T, name string, args ...string) string {
	t.Helper()
	argv := append([]string{"run", "-d", "--name", name}, args...)
	argv = append(argv, "--", "sh", "-c", "mkdir -p /srv && echo "+name+" > /srv/name.txt && cd /srv && exec python3 -m http.server 8000")
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

func TestProxyFollowsTheVMs(t *testing.T) {
	n := newTestNet(t)
	api1 := n.httpVM(t, "api1", "--service", "api", "--http-port", "8000")
	n.httpVM(t, "api2", "--service", "api", "--http-port", "8000")
	proxy := exec.Command("ip", "netns", "exec", n.host, filepath.Join(binDir, "firegopher"), "proxy", "serve",
		"--http", "127.0.0.1:8088", "--domain", "fg.local")
	proxy.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir)
	var proxyLog strings.Builder
	proxy.Stdout, proxy.Stderr = &proxyLog, &proxyLog
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Process.Signal(syscall.SIGTERM); proxy.Wait() })
	curl := func(host, path string) (string, error) {
		out, err := exec.Command("ip", "netns", "exec", n.host, "curl", "-sf", "-m", "5", "-H", "Host: "+host, "http://127.0.0.1:8088"+path).Output()
		return string(out), err
	}
	// Both VMs come into the rotation once healthy; requests spread over both.
	seen := map[string]bool{}
	deadline := time.Now().Add(2 * time.Minute)
	for len(seen) < 2 {
		if out, err := curl("api.fg.local", "/name.txt"); err == nil {
			seen[strings.TrimSpace(out)] = true
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service never reached both VMs (saw %v); proxy log:\n%s", seen, proxyLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := curl("api2.fg.local", "/name.txt"); err != nil || out != "api2\n" {
		t.Fatalf("by name: %q %v", out, err)
	}
	if r := runFiregopher(t, []string{"ip", "netns", "exec", n.host}, "proxy", "routes"); r.code != 0 || !strings.Contains(string(r.stdout), "api.fg.local") {
		t.Fatalf("proxy routes: %s", r)
	}
	// A stop during a bounded load (400 requests, 8 at a time): no request fails.
	load := exec.Command("ip", "netns", "exec", n.host, "sh", "-c",
		`seq 400 | xargs -P 8 -I{} curl -s -o /dev/null -w '%{http_code}\n' -m 10 -H 'Host: api.fg.local' http://127.0.0.1:8088/name.txt`)
	var codes strings.Builder
	load.Stdout = &codes
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // let the load get going: the stop lands in its middle
	if r := n.fg(t, "stop", "-t", "10", api1); r.code != 0 {
		t.Fatalf("stop: %s", r)
	}
	load.Wait()
	got := strings.Fields(codes.String())
	bad := 0
	for _, c := range got {
		if c != "200" {
			bad++
		}
	}
	if len(got) != 400 || bad != 0 {
		t.Fatalf("%d of %d requests failed during the stop; proxy log:\n%s", bad, len(got), proxyLog.String())
	}
	if out, err := curl("api.fg.local", "/name.txt"); err != nil || out != "api2\n" {
		t.Fatalf("after the stop only api2 serves: %q %v", out, err)
	}
	fmt.Fprint(os.Stderr, "")
}
