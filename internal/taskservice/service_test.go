package taskservice

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"syscall"
	"testing"
	"time"

	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/typeurl/v2"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/spec"
)

type recorder struct {
	mu     sync.Mutex
	topics []string
	closed bool
}

func (r *recorder) Publish(ctx context.Context, topic string, ev events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("publish after close")
	}
	if ns, _ := namespaces.Namespace(ctx); ns != "testns" {
		return errors.New("event without the shim's namespace")
	}
	r.topics = append(r.topics, topic)
	return nil
}

func (r *recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

func sandboxBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cfg := `{"ociVersion":"1.0.2","process":{"args":["/pause"],"cwd":"/"},"annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"pod1"}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A pod's sandbox is held without a VM: its whole life, with its events in order, and
// the shim shuts down (closing the publisher) only once it holds no task.
func TestSandboxLifecycle(t *testing.T) {
	ctx := context.Background()
	pub := &recorder{}
	shutdowns := 0
	s := New(Config{}, "testns", pub, func() { shutdowns++ })
	dir := sandboxBundle(t)
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "pod1", Bundle: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "pod1", Bundle: dir}); !errdefs.IsAlreadyExists(errdefs.FromGRPC(err)) {
		t.Fatalf("second create: %v", err)
	}
	start, err := s.Start(ctx, &taskAPI.StartRequest{ID: "pod1"})
	if err != nil {
		t.Fatal(err)
	}
	if start.Pid != uint32(os.Getpid()) {
		t.Fatalf("pid %d, want the shim's", start.Pid)
	}
	st, _ := s.State(ctx, &taskAPI.StateRequest{ID: "pod1"})
	if st.Status != task.Status_RUNNING || st.Bundle != dir {
		t.Fatalf("state: %+v", st)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "pod1"}); err == nil {
		t.Fatal("a running task was deleted")
	}
	s.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "pod1"})
	if shutdowns != 0 || pub.closed {
		t.Fatal("shut down while holding a task")
	}
	waited := make(chan *taskAPI.WaitResponse)
	go func() {
		w, _ := s.Wait(ctx, &taskAPI.WaitRequest{ID: "pod1"})
		waited <- w
	}()
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "pod1", Signal: uint32(syscall.SIGTERM)}); err != nil {
		t.Fatal(err)
	}
	if w := <-waited; w == nil || w.ExitStatus != 143 {
		t.Fatalf("wait: %+v, want exit 143", w)
	}
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "pod1", Signal: uint32(syscall.SIGKILL)}); !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Fatalf("kill of a stopped task: %v, want not found", err)
	}
	del, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "pod1"})
	if err != nil || del.ExitStatus != 143 {
		t.Fatalf("delete: %+v %v", del, err)
	}
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	if !reflect.DeepEqual(pub.topics, want) {
		t.Fatalf("events %q, want %q", pub.topics, want)
	}
	if _, err := s.State(ctx, &taskAPI.StateRequest{ID: "pod1"}); !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Fatalf("state after delete: %v", err)
	}
	s.Shutdown(ctx, &taskAPI.ShutdownRequest{})
	if shutdowns != 1 || !pub.closed {
		t.Fatalf("shutdown: %d calls, publisher closed %v", shutdowns, pub.closed)
	}
}

func TestCreateRejectsABadBundle(t *testing.T) {
	s := New(Config{}, "testns", &recorder{}, func() {})
	_, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c", Bundle: t.TempDir()})
	if !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) {
		t.Fatalf("a bundle without config.json: %v", err)
	}
}

func TestExitCode(t *testing.T) {
	cases := []struct {
		exit   agent.Exit
		err    error
		killed bool
		want   uint32
	}{
		{agent.Exit{Code: 7}, nil, false, 7},
		{agent.Exit{Code: 143, Signal: 15}, nil, false, 143},
		{agent.Exit{}, context.Canceled, true, 137},
		{agent.Exit{}, errors.New("VM died"), false, 255},
	}
	for _, c := range cases {
		if got := exitCode(c.exit, c.err, c.killed); got != c.want {
			t.Errorf("exitCode(%+v, %v, %v) = %d, want %d", c.exit, c.err, c.killed, got, c.want)
		}
	}
}

// stdin reaches the process from containerd's FIFO, and CloseIO ends it even while the
// client keeps its end open.
func TestStdinFIFOAndCloseIO(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "stdin"), filepath.Join(dir, "stdout")
	for _, p := range []string{in, out} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The client's ends, opened first as ctr does.
	outR, err := os.OpenFile(out, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	inW, err := os.OpenFile(in, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer inW.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pio, err := openIO(in, out, "", false)
	if err != nil {
		t.Fatal(err)
	}
	defer pio.close()
	inW.WriteString("hello")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(pio.reader(), buf); err != nil || string(buf) != "hello" {
		t.Fatalf("stdin read %q, %v", buf, err)
	}
	// The client's writer is still open: only CloseIO can end the stream now.
	pio.closeStdin()
	ended := make(chan error)
	go func() {
		_, err := pio.reader().Read(buf)
		ended <- err
	}()
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Fatalf("after CloseIO: %v, want EOF", err)
		}
	case <-ctx.Done():
		t.Fatal("CloseIO did not end stdin")
	}
	stdout, stderr := pio.writers()
	if stdout == nil || stderr != nil {
		t.Fatalf("writers: %v %v", stdout, stderr)
	}
}

func TestSetSizeKeepsTheLatest(t *testing.T) {
	p := &processIO{resize: make(chan agent.Resize, 1)}
	p.setSize(agent.Resize{Rows: 1, Cols: 1})
	p.setSize(agent.Resize{Rows: 40, Cols: 120})
	if r := <-p.resize; r != (agent.Resize{Rows: 40, Cols: 120}) {
		t.Fatalf("resize %+v", r)
	}
}

func TestRunNameIsPerContainerAndValid(t *testing.T) {
	a, b := runName("k8s.io", "c1"), runName("k8s.io", "c2")
	if a == b || runName("default", "c1") == a || runName("k8s.io", "c1") != a {
		t.Fatalf("run names: %s %s", a, b)
	}
	m := &spec.Machine{ID: "0123456789ab", Run: a, Mode: spec.ModeApp, CPUs: 1, Memory: 512 * spec.MiB, Process: spec.Process{Cmd: []string{"true"}}}
	if err := m.Validate(); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
}

func TestProcessMetrics(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "42")
	os.Mkdir(dir, 0o755)
	// A command name with a space and a parenthesis, as QEMU's thread names can have.
	stat := "42 (qemu-system) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 100 1000 10 18446744073709551615"
	os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644)
	os.WriteFile(filepath.Join(dir, "status"), []byte("Name:\tqemu\nVmRSS:\t  204800 kB\nThreads:\t7\n"), 0o644)
	m, err := processMetrics(root, 42)
	if err != nil {
		t.Fatal(err)
	}
	if m.CPU.UsageUsec != 3_000_000 || m.CPU.UserUsec != 2_500_000 || m.CPU.SystemUsec != 500_000 {
		t.Errorf("cpu: %+v", m.CPU)
	}
	if m.Memory.Usage != 200<<20 || m.Pids.Current != 7 {
		t.Errorf("memory %d, threads %d", m.Memory.Usage, m.Pids.Current)
	}
	if _, err := processMetrics(root, 43); err == nil {
		t.Error("metrics of a missing process")
	}
}

func TestStatsOfASandboxAreZero(t *testing.T) {
	ctx := context.Background()
	s := New(Config{}, "testns", &recorder{}, func() {})
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "pod1", Bundle: sandboxBundle(t)}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Stats(ctx, &taskAPI.StatsRequest{ID: "pod1"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := typeurl.UnmarshalAny(r.Stats)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := v.(*cg2.Metrics); !ok || m.Memory.Usage != 0 {
		t.Fatalf("stats: %T %+v", v, v)
	}
}
