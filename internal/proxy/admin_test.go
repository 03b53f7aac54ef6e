package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestAdminHandler(t *testing.T) {
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	_, addr := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held <- struct{}{}
		<-hold
	}))
	e := start(t, Config{}, Backend{ID: "vm1", Name: "web", Service: "api", Addr: addr})
	e.waitHealth("vm1", "healthy")
	admin := httptest.NewServer(e.p.AdminHandler())
	t.Cleanup(admin.Close)
	call := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, admin.URL+path, nil)
		resp, err := admin.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := call("GET", "/routes")
	var routes []Route
	if err := json.Unmarshal([]byte(body), &routes); code != 200 || err != nil {
		t.Fatalf("/routes: %d %v\n%s", code, err, body)
	}
	if len(routes) != 2 || routes[0].Host != "api.fg.test" || routes[0].Backends[0].Addr != addr || routes[0].Backends[0].Health != "healthy" {
		t.Errorf("/routes: %+v", routes)
	}
	if code, body := call("GET", "/metrics"); code != 200 || len(parseMetrics(t, body)) == 0 {
		t.Errorf("/metrics: %d", code)
	}

	done := make(chan struct{})
	go func() {
		e.do("GET", "web.fg.test", "/", "")
		close(done)
	}()
	<-held
	e.src.Update("vm1", func(b *Backend) { b.Draining = true })
	if code, body := call("POST", "/drain?id=vm1&timeout=50ms"); code != 504 {
		t.Errorf("drain with a request in flight: %d %q, want 504", code, body)
	}
	close(hold)
	<-done
	if code, body := call("POST", "/drain?id=vm1"); code != 200 || body != "drained\n" {
		t.Errorf("drain: %d %q", code, body)
	}
	for _, path := range []string{"/drain", "/drain?id=vm1&timeout=soon"} {
		if code, _ := call("POST", path); code != 400 {
			t.Errorf("%s: %d, want 400", path, code)
		}
	}
}
