package bundle

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/firegopher/firegopher/internal/spec"
)

const id = "0123456789ab"

func ptr[T any](v T) *T { return &v }

func baseSpec() *specs.Spec {
	return &specs.Spec{
		Process: &specs.Process{
			Args: []string{"sh", "-c", "echo hi"},
			Env:  []string{"PATH=/usr/bin:/bin", "GREETING=hello world"},
			Cwd:  "/srv",
			User: specs.User{UID: 1000, GID: 100, AdditionalGids: []uint32{10}},
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 4096},
				{Type: "RLIMIT_AS", Soft: 1, Hard: 2},
			},
		},
		Hostname: "web-1",
	}
}

func TestMachineMapsTheProcess(t *testing.T) {
	res, err := Machine(id, baseSpec())
	if err != nil {
		t.Fatal(err)
	}
	m := res.Machine
	want := spec.Process{
		Cmd:     []string{"sh", "-c", "echo hi"},
		Env:     []string{"PATH=/usr/bin:/bin", "GREETING=hello world"},
		WorkDir: "/srv",
		User:    "1000:100",
		Rlimits: []spec.Rlimit{{Resource: "nofile", Soft: 1024, Hard: 4096}},
	}
	if !reflect.DeepEqual(m.Process, want) {
		t.Fatalf("process:\n got %+v\nwant %+v", m.Process, want)
	}
	if m.Name != "web-1" || m.ID != id || m.Mode != spec.ModeApp || m.Kernel.Name != "default" {
		t.Fatalf("machine: %+v", m)
	}
	if m.CPUs != DefaultCPUs || m.Memory != DefaultMemory {
		t.Fatalf("size: %d CPUs, %s", m.CPUs, m.Memory)
	}
	joined := strings.Join(res.Ignored, "\n")
	for _, w := range []string{"RLIMIT_AS", "additionalGids"} {
		if !strings.Contains(joined, w) {
			t.Errorf("ignored does not mention %s: %q", w, res.Ignored)
		}
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("mapped machine does not validate: %v", err)
	}
}

func TestMachineTerminal(t *testing.T) {
	s := baseSpec()
	s.Process.Terminal = true
	res, err := Machine(id, s)
	if err != nil {
		t.Fatal(err)
	}
	if tty := res.Machine.Process.TTY; tty == nil || *tty != (spec.Terminal{Rows: 24, Cols: 80}) {
		t.Fatalf("tty: %+v", tty)
	}
	s.Process.ConsoleSize = &specs.Box{Height: 40, Width: 120}
	res, _ = Machine(id, s)
	if tty := res.Machine.Process.TTY; *tty != (spec.Terminal{Rows: 40, Cols: 120}) {
		t.Fatalf("tty with console size: %+v", tty)
	}
}

func TestMachineSize(t *testing.T) {
	cases := []struct {
		name        string
		resources   *specs.LinuxResources
		annotations map[string]string
		cpus        int
		memory      spec.Size
		err         string
	}{
		{name: "defaults", cpus: 1, memory: 512 * spec.MiB},
		{name: "resources", resources: &specs.LinuxResources{
			CPU:    &specs.LinuxCPU{Quota: ptr[int64](150000), Period: ptr[uint64](100000)},
			Memory: &specs.LinuxMemory{Limit: ptr[int64](int64(spec.GiB))},
		}, cpus: 2, memory: spec.GiB},
		{name: "small memory limit is raised to the minimum", resources: &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: ptr[int64](64 << 20)},
		}, cpus: 1, memory: spec.MinMemory},
		{name: "annotations win", resources: &specs.LinuxResources{
			CPU: &specs.LinuxCPU{Quota: ptr[int64](400000), Period: ptr[uint64](100000)},
		}, annotations: map[string]string{AnnotationCPUs: "3", AnnotationMemory: "768M"}, cpus: 3, memory: 768 * spec.MiB},
		{name: "bad cpus", annotations: map[string]string{AnnotationCPUs: "two"}, err: AnnotationCPUs},
		{name: "zero cpus", annotations: map[string]string{AnnotationCPUs: "0"}, err: AnnotationCPUs},
		{name: "bad memory", annotations: map[string]string{AnnotationMemory: "lots"}, err: AnnotationMemory},
		{name: "too little memory", annotations: map[string]string{AnnotationMemory: "16M"}, err: AnnotationMemory},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := baseSpec()
			s.Annotations = c.annotations
			if c.resources != nil {
				s.Linux = &specs.Linux{Resources: c.resources}
			}
			res, err := Machine(id, s)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want one naming %s", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Machine.CPUs != c.cpus || res.Machine.Memory != c.memory {
				t.Fatalf("got %d CPUs, %s; want %d, %s", res.Machine.CPUs, res.Machine.Memory, c.cpus, c.memory)
			}
		})
	}
}

func TestMachineRejectsAndSkips(t *testing.T) {
	s := baseSpec()
	s.Process.Args = nil
	if _, err := Machine(id, s); err == nil || !strings.Contains(err.Error(), "process.args") {
		t.Fatalf("empty args: %v", err)
	}
	s = baseSpec()
	s.Process.Env = append(s.Process.Env, "NOEQUALS", "BAD-KEY=1")
	s.Hostname = "Not A Host"
	res, err := Machine(id, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Machine.Process.Env) != 2 || res.Machine.Name != "" {
		t.Fatalf("env %q, name %q", res.Machine.Process.Env, res.Machine.Name)
	}
	if len(res.Ignored) != 5 { // two env entries, hostname, RLIMIT_AS, additionalGids
		t.Fatalf("ignored: %q", res.Ignored)
	}
	s = baseSpec()
	s.Process.Cwd = "relative"
	if _, err := Machine(id, s); err == nil {
		t.Fatal("a relative cwd was accepted")
	}
}

func TestSandboxAndGroup(t *testing.T) {
	s := baseSpec()
	if IsSandbox(s) || Group(s) != "" {
		t.Fatal("a plain container is a sandbox or in a group")
	}
	s.Annotations = map[string]string{"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "pod1"}
	if !IsSandbox(s) || Group(s) != "pod1" {
		t.Fatal("CRI sandbox annotations not recognised")
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"ociVersion":"1.0.2","process":{"args":["true"],"cwd":"/"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Read(dir)
	if err != nil || s.Process.Args[0] != "true" {
		t.Fatalf("Read: %v %+v", err, s)
	}
	os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{`), 0o644)
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), ConfigFile) {
		t.Fatalf("a broken config.json: %v", err)
	}
}

func TestNetNSAndResolvConf(t *testing.T) {
	s := baseSpec()
	if NetNSPath(s) != "" || ResolvConf(s) != "" {
		t.Fatal("a spec without namespaces or mounts names some")
	}
	s.Linux = &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"}}}
	s.Mounts = []specs.Mount{{Destination: "/etc/hosts", Source: "/x/hosts", Type: "bind"}, {Destination: "/etc/resolv.conf", Source: "/x/resolv.conf", Type: "bind"}}
	if NetNSPath(s) != "/var/run/netns/cni-1" || ResolvConf(s) != "/x/resolv.conf" {
		t.Fatalf("got %q %q", NetNSPath(s), ResolvConf(s))
	}
}
