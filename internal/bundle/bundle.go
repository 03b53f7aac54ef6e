// Package bundle reads an OCI runtime bundle's config.json (what containerd hands a runtime)
// into a firegopher machine: the process (args, env, cwd, user, rlimits, terminal), the
// hostname, and the VM's size from linux.resources or firegopher.dev annotations. The root
// filesystem is not here: it arrives as mounts (see package snapdisk).
package bundle

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// ConfigFile is the runtime spec's file in a bundle.
const ConfigFile = "config.json"

// Annotations that size the VM; they win over linux.resources.
const (
	AnnotationCPUs   = "firegopher.dev/cpus"
	AnnotationMemory = "firegopher.dev/memory"
)

// Defaults of a container that asks for no size: what `firegopher run` gives.
const (
	DefaultCPUs   = 1
	DefaultMemory = 512 * spec.MiB
)

// Sandbox annotations: the pod's pause container, which the shim holds without a VM.
var sandboxAnnotations = map[string]string{
	"io.kubernetes.cri.container-type":   "sandbox", // containerd's CRI
	"io.kubernetes.cri-o.ContainerType":  "sandbox", // CRI-O
	"io.kubernetes.docker.type":          "podsandbox",
	"io.kubernetes.cri-o.container-type": "sandbox",
}

// GroupAnnotations name the pod a container belongs to: containers of one pod share one
// shim process (the runc shim groups the same way).
var GroupAnnotations = []string{
	"io.kubernetes.cri.sandbox-id",
	"io.kubernetes.cri-o.SandboxID",
}

// hostnamePattern is what spec.Machine accepts as a name (the guest's hostname).
var hostnamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Read loads dir's config.json.
func Read(dir string) (*specs.Spec, error) {
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// IsSandbox says whether s is a pod's sandbox (pause) container.
func IsSandbox(s *specs.Spec) bool {
	for k, v := range sandboxAnnotations {
		if s.Annotations[k] == v {
			return true
		}
	}
	return false
}

// Group is the pod id s belongs to ("" when none is named).
func Group(s *specs.Spec) string {
	for _, k := range GroupAnnotations {
		if v := s.Annotations[k]; v != "" {
			return v
		}
	}
	return ""
}

// NetNSPath is the network namespace the container joins, bound at a path (a pod's, made
// by the CRI); "" when it has none of its own or a new one.
func NetNSPath(s *specs.Spec) string {
	if s.Linux == nil {
		return ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// ResolvConf is the host file the container's /etc/resolv.conf is bind-mounted from ("" if
// none): the pod's DNS settings.
func ResolvConf(s *specs.Spec) string {
	for _, m := range s.Mounts {
		if m.Destination == "/etc/resolv.conf" && (m.Type == "bind" || m.Type == "") {
			return m.Source
		}
	}
	return ""
}

// Result is a mapped machine and what of the spec it could not carry.
type Result struct {
	Machine *spec.Machine
	// Ignored says, one line each, what of the spec the VM does not honour.
	Ignored []string
}

// Machine maps s onto a new app machine with id. The kernel is the default one; assets
// are the caller's to resolve. Errors name the config.json field.
func Machine(id string, s *specs.Spec) (*Result, error) {
	if s.Process == nil {
		return nil, fmt.Errorf("process: missing")
	}
	if len(s.Process.Args) == 0 {
		return nil, fmt.Errorf("process.args: empty")
	}
	res := &Result{}
	m := &spec.Machine{
		ID: id, Mode: spec.ModeApp, CPUs: DefaultCPUs, Memory: DefaultMemory,
		Kernel: spec.AssetRef{Name: "default"},
	}
	p := s.Process
	m.Process = spec.Process{
		Cmd:     slices.Clone(p.Args),
		Env:     envOf(p.Env, &res.Ignored),
		WorkDir: p.Cwd,
		User:    fmt.Sprintf("%d:%d", p.User.UID, p.User.GID),
		// Stdin is the caller's: containerd names a stdin FIFO only when the client has one.
	}
	if p.Cwd == "/" {
		m.Process.WorkDir = ""
	}
	if len(p.User.AdditionalGids) > 0 {
		// The guest derives supplementary groups from the image's /etc/group for the uid,
		// as containerd computed these; other ids cannot be carried.
		res.Ignored = append(res.Ignored, fmt.Sprintf("process.user.additionalGids %v: the guest takes the user's groups from the image's /etc/group", p.User.AdditionalGids))
	}
	if p.Terminal {
		size := spec.Terminal{Rows: 24, Cols: 80}
		if p.ConsoleSize != nil && p.ConsoleSize.Height > 0 && p.ConsoleSize.Width > 0 {
			size = spec.Terminal{Rows: uint16(p.ConsoleSize.Height), Cols: uint16(p.ConsoleSize.Width)}
		}
		m.Process.TTY = &size
	}
	for i, r := range p.Rlimits {
		name := strings.ToLower(strings.TrimPrefix(r.Type, "RLIMIT_"))
		if _, ok := vmconfig.RlimitResources[name]; !ok {
			res.Ignored = append(res.Ignored, fmt.Sprintf("process.rlimits[%d]: %s is not one the guest sets", i, r.Type))
			continue
		}
		m.Process.Rlimits = append(m.Process.Rlimits, spec.Rlimit{Resource: name, Soft: r.Soft, Hard: r.Hard})
	}
	if h := strings.ToLower(s.Hostname); h != "" {
		if hostnamePattern.MatchString(h) {
			m.Name = h
		} else {
			res.Ignored = append(res.Ignored, fmt.Sprintf("hostname: %q is not a hostname firegopher accepts; the VM's id is its hostname", s.Hostname))
		}
	}
	if err := size(m, s); err != nil {
		return nil, err
	}
	if err := m.Process.Validate(); err != nil {
		return nil, fmt.Errorf("process: %w", err)
	}
	res.Machine = m
	return res, nil
}

// envOf keeps the KEY=VALUE entries the guest accepts; others are reported.
func envOf(env []string, ignored *[]string) []string {
	var out []string
	for _, kv := range env {
		if err := (&spec.Process{Env: []string{kv}}).Validate(); err != nil {
			*ignored = append(*ignored, fmt.Sprintf("process.env: %q: not KEY=VALUE with a KEY of letters, digits and '_'", kv))
			continue
		}
		out = append(out, kv)
	}
	return out
}

// size sets the VM's CPUs and memory: annotations first, else linux.resources (CPU quota
// over period, rounded up; the memory limit), else the defaults.
func size(m *spec.Machine, s *specs.Spec) error {
	if s.Linux != nil && s.Linux.Resources != nil {
		r := s.Linux.Resources
		if c := r.CPU; c != nil && c.Quota != nil && *c.Quota > 0 && c.Period != nil && *c.Period > 0 {
			m.CPUs = int(math.Ceil(float64(*c.Quota) / float64(*c.Period)))
		}
		if mem := r.Memory; mem != nil && mem.Limit != nil && *mem.Limit > 0 {
			m.Memory = max(spec.Size(*mem.Limit), spec.MinMemory)
		}
	}
	if v, ok := s.Annotations[AnnotationCPUs]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("annotations[%s]: %q is not a number", AnnotationCPUs, v)
		}
		m.CPUs = n
	}
	if v, ok := s.Annotations[AnnotationMemory]; ok {
		sz, err := spec.ParseSize("annotations["+AnnotationMemory+"]", v)
		if err != nil {
			return err
		}
		m.Memory = sz
	}
	m.CPUs = min(m.CPUs, spec.MaxCPUs)
	if m.CPUs < 1 {
		return fmt.Errorf("annotations[%s]: %d, want 1 to %d", AnnotationCPUs, m.CPUs, spec.MaxCPUs)
	}
	if m.Memory < spec.MinMemory || m.Memory > spec.MaxMemory {
		return fmt.Errorf("linux.resources.memory.limit or annotations[%s]: %s, want %s to %s", AnnotationMemory, m.Memory, spec.MinMemory, spec.MaxMemory)
	}
	return nil
}
