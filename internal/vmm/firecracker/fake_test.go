package firecracker

// A fake Firecracker built from the OpenAPI contract: an http.Server on a Unix socket serving
// exactly the endpoints Start uses plus GET /, decoding every body into the SDK's model,
// validating it and enforcing Firecracker's ordering rules. The test binary re-executes itself
// as the fake `firecracker` process (see TestMain).

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/go-openapi/strfmt"
)

// fakeEnv makes the test binary act as firecracker.
const fakeEnv = "FIREGOPHER_FAKE_FIRECRACKER"

// Files the fake process reads and writes in its API socket's directory.
const (
	fakeOptionsFile = "fake.json"   // fakeOptions, written by the test before Start
	fakeCallsFile   = "calls.jsonl" // one fakeCall per API request, in order
	fakePidFile     = "fake.pid"
)

type fakeOptions struct {
	RejectDrives bool `json:"reject_drives"` // PUT /drives answers 400
	StayUp       bool `json:"stay_up"`       // keep running after InstanceStart until signalled
	NoAPI        bool `json:"no_api"`        // never open the API socket
}

type fakeCall struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
}

type fakeAPI struct {
	opts   fakeOptions
	mux    *http.ServeMux
	record func(fakeCall) // called under mu, before the response is written

	mu                     sync.Mutex
	calls                  []fakeCall
	machine, boot, started bool
	booted                 chan struct{}
}

func newFakeAPI(opts fakeOptions) *fakeAPI {
	f := &fakeAPI{opts: opts, mux: http.NewServeMux(), booted: make(chan struct{})}
	f.mux.HandleFunc("GET /{$}", f.describeInstance)
	f.mux.HandleFunc("PUT /machine-config", f.putMachineConfig)
	f.mux.HandleFunc("PUT /boot-source", f.putBootSource)
	f.mux.HandleFunc("PUT /drives/{id}", f.putDrive)
	f.mux.HandleFunc("PUT /network-interfaces/{id}", f.putNIC)
	f.mux.HandleFunc("PUT /vsock", f.putVsock)
	f.mux.HandleFunc("PUT /actions", f.putAction)
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		fault(w, http.StatusBadRequest, err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	f.mu.Lock()
	defer f.mu.Unlock()
	c := fakeCall{Method: r.Method, Path: r.URL.Path}
	if json.Valid(body) {
		c.Body = body
	}
	f.calls = append(f.calls, c)
	if f.record != nil {
		f.record(c)
	}
	if _, pattern := f.mux.Handler(r); pattern == "" {
		// Firecracker answers unknown routes with 400, not 404.
		fault(w, http.StatusBadRequest, fmt.Sprintf("Invalid request method and/or path: %s %s.", r.Method, r.URL.Path))
		return
	}
	f.mux.ServeHTTP(w, r)
}

func fault(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(&models.Error{FaultMessage: msg})
}

// decode is Firecracker's strict body parsing: unknown fields are errors, then the schema.
func decode[T any, PT interface {
	*T
	Validate(strfmt.Registry) error
}](w http.ResponseWriter, r *http.Request) (PT, bool) {
	v := PT(new(T))
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		fault(w, http.StatusBadRequest, "An error occurred when deserializing the json body of a request: "+err.Error())
		return nil, false
	}
	if err := v.Validate(strfmt.Default); err != nil {
		fault(w, http.StatusBadRequest, "Invalid body: "+err.Error())
		return nil, false
	}
	return v, true
}

// preBoot enforces "Pre-boot only" from the API description.
func (f *fakeAPI) preBoot(w http.ResponseWriter) bool {
	if f.started {
		fault(w, http.StatusBadRequest, "The requested operation is not supported after starting the microVM.")
		return false
	}
	return true
}

func (f *fakeAPI) describeInstance(w http.ResponseWriter, r *http.Request) {
	state := "Not started"
	if f.started {
		state = "Running"
	}
	info := &models.InstanceInfo{AppName: ptr("Firecracker"), ID: ptr("anonymous-instance"), State: ptr(state), VmmVersion: ptr("1.16.1")}
	if err := info.Validate(strfmt.Default); err != nil {
		fault(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(info)
}

func (f *fakeAPI) putMachineConfig(w http.ResponseWriter, r *http.Request) {
	if !f.preBoot(w) {
		return
	}
	if _, ok := decode[models.MachineConfiguration](w, r); ok {
		f.machine = true
		w.WriteHeader(http.StatusNoContent)
	}
}

func (f *fakeAPI) putBootSource(w http.ResponseWriter, r *http.Request) {
	if !f.preBoot(w) {
		return
	}
	if _, ok := decode[models.BootSource](w, r); ok {
		f.boot = true
		w.WriteHeader(http.StatusNoContent)
	}
}

func (f *fakeAPI) putDrive(w http.ResponseWriter, r *http.Request) {
	if !f.preBoot(w) {
		return
	}
	d, ok := decode[models.Drive](w, r)
	if !ok {
		return
	}
	if *d.DriveID != r.PathValue("id") {
		fault(w, http.StatusBadRequest, "The id from the path does not match the id from the body!")
		return
	}
	if f.opts.RejectDrives {
		fault(w, http.StatusBadRequest, "Unable to create the block device: BackingFile(Os { code: 2, kind: NotFound })")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeAPI) putNIC(w http.ResponseWriter, r *http.Request) {
	if !f.preBoot(w) {
		return
	}
	n, ok := decode[models.NetworkInterface](w, r)
	if !ok {
		return
	}
	if *n.IfaceID != r.PathValue("id") {
		fault(w, http.StatusBadRequest, "The id from the path does not match the id from the body!")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeAPI) putVsock(w http.ResponseWriter, r *http.Request) {
	if !f.preBoot(w) {
		return
	}
	if _, ok := decode[models.Vsock](w, r); ok {
		w.WriteHeader(http.StatusNoContent)
	}
}

func (f *fakeAPI) putAction(w http.ResponseWriter, r *http.Request) {
	a, ok := decode[models.InstanceActionInfo](w, r)
	if !ok {
		return
	}
	if *a.ActionType != models.InstanceActionInfoActionTypeInstanceStart {
		fault(w, http.StatusBadRequest, "fake: only InstanceStart is implemented")
		return
	}
	switch {
	case f.started:
		fault(w, http.StatusBadRequest, "The requested operation is not supported after starting the microVM.")
	case !f.boot:
		fault(w, http.StatusBadRequest, "Cannot start microvm without kernel configuration.")
	case !f.machine:
		fault(w, http.StatusBadRequest, "fake: cannot start microvm without machine configuration.")
	default:
		f.started = true
		close(f.booted)
		w.WriteHeader(http.StatusNoContent)
	}
}

// fakeFirecrackerMain is the fake process: serve the API on --api-sock, print to the
// "console" once booted, exit 0 (at once, or on SIGTERM with stay_up).
func fakeFirecrackerMain(args []string) int {
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	sock := fs.String("api-sock", "", "API socket path")
	if err := fs.Parse(args); err != nil || *sock == "" {
		fmt.Fprintln(os.Stderr, "fake firecracker: want --api-sock PATH")
		return 2
	}
	dir := filepath.Dir(*sock)
	if err := os.WriteFile(filepath.Join(dir, fakePidFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var opts fakeOptions
	if data, err := os.ReadFile(filepath.Join(dir, fakeOptionsFile)); err == nil {
		if err := json.Unmarshal(data, &opts); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if opts.NoAPI {
		<-sigs
		return 0
	}
	callsFile, err := os.OpenFile(filepath.Join(dir, fakeCallsFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer callsFile.Close()
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	api := newFakeAPI(opts)
	enc := json.NewEncoder(callsFile)
	api.record = func(c fakeCall) { enc.Encode(c) }
	srv := &http.Server{Handler: api}
	go srv.Serve(ln)
	select {
	case <-api.booted:
		fmt.Println("fake guest booted")
		if opts.StayUp {
			<-sigs
		}
	case <-sigs:
	}
	// Shutdown waits for the InstanceStart response to be written before we exit.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	return 0
}

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) == "1" {
		if len(os.Args) == 2 && os.Args[1] == "--version" {
			fmt.Printf("Firecracker v1.16.1\n\n")
			os.Exit(0)
		}
		os.Exit(fakeFirecrackerMain(os.Args[1:]))
	}
	// Children started with os.Args[0] as the firecracker binary become the fake.
	os.Setenv(fakeEnv, "1")
	os.Exit(m.Run())
}
