// Package spec turns what the user typed into validated values. Everything past this
// package takes these types, never raw strings: a bad size, name or path is reported
// here, once, naming the flag, before anything is created.
package spec

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Size is a number of bytes.
type Size int64

const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
)

var sizePattern = regexp.MustCompile(`^([0-9]+)\s*([A-Za-z]*)$`)

// ParseSize reads "512M", "512MiB", "2G", "1GB", "1048576K"; a bare number is MiB, as with
// every VMM's memory flag. Units are binary (K, M, G, T with optional "i" and "B").
func ParseSize(field, s string) (Size, error) {
	m := sizePattern.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%s: %q is not a size (examples: 512M, 2G)", field, s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q: %w", field, s, err)
	}
	var unit Size
	u := strings.ToUpper(m[2])
	if u != "B" {
		u = strings.TrimSuffix(strings.TrimSuffix(u, "B"), "I")
	}
	switch u {
	case "B":
		unit = 1
	case "", "M":
		unit = MiB
	case "K":
		unit = KiB
	case "G":
		unit = GiB
	case "T":
		unit = 1 << 40
	default:
		return 0, fmt.Errorf("%s: %q: unknown unit %q (use K, M, G or T)", field, s, m[2])
	}
	if n > int64(1<<62)/int64(unit) {
		return 0, fmt.Errorf("%s: %q is too large", field, s)
	}
	return Size(n) * unit, nil
}

// MiB returns the size in whole MiB, rounded up.
func (s Size) MiB() int { return int((s + MiB - 1) / MiB) }

func (s Size) String() string {
	switch {
	case s != 0 && s%(1<<40) == 0:
		return fmt.Sprintf("%dT", s>>40)
	case s%GiB == 0:
		return fmt.Sprintf("%dG", s/GiB)
	case s%MiB == 0:
		return fmt.Sprintf("%dM", s/MiB)
	}
	return fmt.Sprintf("%dB", int64(s))
}

// AssetRef names a kernel or image: either a name in the cache or a local file.
type AssetRef struct {
	Name string // set for cache names ("default")
	Path string // set for local files (absolute)
	OCI  string // set for registry references (pulled on first use)
	Deb  string // set for deb:PACKAGE, a distribution kernel package fetched with apt
}

func (r AssetRef) String() string {
	switch {
	case r.Path != "":
		return r.Path
	case r.OCI != "":
		return r.OCI
	case r.Deb != "":
		return "deb:" + r.Deb
	}
	return r.Name
}

var debPackage = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

// ociRef is a registry reference as docker spells them: [host[:port]/]repo[:tag][@sha256:hex].
var ociRef = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[a-f0-9]{64})?$`)

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ParseName checks the name of a VM or a cached asset: lowercase letters, digits, '.', '_'
// and '-', starting with a letter or digit, at most 63 bytes (a hostname label).
func ParseName(field, s string) (string, error) {
	if !namePattern.MatchString(s) {
		return "", fmt.Errorf("%s: %q, want lowercase letters, digits, '.', '_', '-' (at most 63)", field, s)
	}
	return s, nil
}

// ParseAssetRef reads NAME, PATH or an OCI REF. A leading '/' or '.' makes a path, which
// must exist as a regular file; a ':', '/' or '@' elsewhere makes a registry reference.
func ParseAssetRef(field, s string) (AssetRef, error) {
	if s == "" {
		return AssetRef{}, fmt.Errorf("%s: empty", field)
	}
	if pkg, ok := strings.CutPrefix(s, "deb:"); ok {
		if !debPackage.MatchString(pkg) {
			return AssetRef{}, fmt.Errorf("%s: %q is not a Debian package name", field, pkg)
		}
		return AssetRef{Deb: pkg}, nil
	}
	if !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, ".") && strings.ContainsAny(s, ":/@") {
		if !ociRef.MatchString(s) {
			return AssetRef{}, fmt.Errorf("%s: %q is not a registry reference like registry/repo:tag", field, s)
		}
		return AssetRef{OCI: s}, nil
	}
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
		abs, err := filepath.Abs(s)
		if err != nil {
			return AssetRef{}, fmt.Errorf("%s: %w", field, err)
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return AssetRef{}, fmt.Errorf("%s: %s: no such file", field, s)
		}
		if !fi.Mode().IsRegular() {
			return AssetRef{}, fmt.Errorf("%s: %s: not a regular file", field, s)
		}
		return AssetRef{Path: abs}, nil
	}
	if !namePattern.MatchString(s) {
		return AssetRef{}, fmt.Errorf("%s: %q is neither a path nor a name (lowercase letters, digits, '.', '_', '-')", field, s)
	}
	return AssetRef{Name: s}, nil
}

// Limits keep requests within what a VM on this kind of host can get.
const (
	MaxCPUs   = 64
	MinMemory = 128 * MiB
	MaxMemory = 256 * GiB
)

var userPattern = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*[$]?(:[a-z_][a-z0-9_.-]*)?$|^[0-9]+(:[0-9]+)?$|^[a-z_][a-z0-9_.-]*:[0-9]+$|^[0-9]+:[a-z_][a-z0-9_.-]*$`)

var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

var idPattern = regexp.MustCompile(`^[0-9a-f]{12}$`)

// NewID returns a random VM id: 12 hex digits, like a short container id.
func NewID() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the kernel's CSPRNG does not fail
	}
	return hex.EncodeToString(b)
}

// RunFlags is the raw input of `firegopher run`.
type RunFlags struct {
	Copy           []string // HOST_PATH:GUEST_PATH[:MODE]
	Volumes        []string // NAME:/GUEST/PATH[:ro|:rw], ./DIR:/GUEST/PATH[:ro]
	AuthorizedKeys []string // files of public keys for root's authorized_keys
	Name           string
	User           string
	CPUs           int
	Memory         string
	Kernel         string
	Image          string
	Env            []string
	WorkDir        string
	Cmd            []string
	System         bool
	Net            NetFlags
	VMM            string
	Accel          string
	// Interactive (-i) and TTY (-t, with the host terminal's size and TERM).
	Interactive bool
	TTY         *Terminal
	Term        string
	// Publish (-p) and the proxy's Service/HTTPPort; any of them implies a network.
	Publish  []string
	Service  string
	HTTPPort int
	// AutoStart and AutoStop: the proxy starts the VM on demand and stops it when idle.
	AutoStart bool
	AutoStop  time.Duration
}

// ParseRun validates every flag and returns the machine they describe, with a new id, or
// the first problem, naming the flag.
func ParseRun(f RunFlags) (*Machine, error) {
	m := &Machine{
		ID: NewID(), Name: f.Name, Mode: ModeApp, CPUs: f.CPUs,
		Process: Process{Cmd: f.Cmd, Env: f.Env, WorkDir: f.WorkDir, User: f.User, Stdin: f.Interactive, TTY: f.TTY},
		VMM:     VMM{Backend: f.VMM, Accel: f.Accel},
	}
	if f.System {
		m.Mode = ModeSystem
	}
	var err error
	if m.Memory, err = ParseSize(FieldMemory, f.Memory); err != nil {
		return nil, err
	}
	if m.Kernel, err = ParseAssetRef("--kernel", f.Kernel); err != nil {
		return nil, err
	}
	if m.Image, err = ParseAssetRef("--image", f.Image); err != nil {
		return nil, err
	}
	if m.Files, err = parseFiles(f.Copy, f.AuthorizedKeys); err != nil {
		return nil, err
	}
	if m.Volumes, err = ParseVolumes(f.Volumes); err != nil {
		return nil, err
	}
	if m.Ports, err = ParsePorts(f.Publish); err != nil {
		return nil, err
	}
	if f.HTTPPort != 0 {
		if f.HTTPPort < 1 || f.HTTPPort > 65535 {
			return nil, fmt.Errorf("--http-port: %d is not a port (1-65535)", f.HTTPPort)
		}
		m.HTTPPort = uint16(f.HTTPPort)
	}
	m.Service, m.AutoStart, m.AutoStop = f.Service, f.AutoStart, f.AutoStop
	if len(m.Ports) > 0 || m.HTTPPort > 0 || m.Service != "" {
		f.Net.Enabled = true
	}
	if m.Network, err = ParseNet(f.Net); err != nil {
		return nil, err
	}
	if f.TTY != nil && f.Term != "" && !hasEnv(m.Process.Env, "TERM") {
		m.Process.Env = append(m.Process.Env, "TERM="+f.Term) // the host terminal's, as docker
	}
	if m.Network != nil {
		// A lone VM's address is keyed by its own id and hostname.
		m.Network.RunID, m.Network.Slot = m.ID, m.Hostname()
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// File is a host file to place in the guest (written by init inside the guest).
type File struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
	Dir  bool   `json:"dir,omitempty"`
	Data []byte `json:"data,omitempty"`
}

// MaxFilesSize bounds what --copy and --authorized-key carry: it travels in the initrd.
const MaxFilesSize = 16 * MiB

func parseFiles(copies, keys []string) ([]File, error) {
	var files []File
	var total int
	for _, c := range copies {
		parts := strings.Split(c, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") || filepath.Clean(parts[1]) != parts[1] || parts[1] == "/" {
			return nil, fmt.Errorf("--copy: %q, want HOST_PATH:/GUEST/PATH[:MODE]", c)
		}
		data, err := os.ReadFile(parts[0])
		if err != nil {
			return nil, fmt.Errorf("--copy: %s: %v", parts[0], err)
		}
		mode := uint32(0o644)
		if fi, err := os.Stat(parts[0]); err == nil {
			mode = uint32(fi.Mode().Perm())
		}
		if len(parts) == 3 {
			m, err := strconv.ParseUint(parts[2], 8, 32)
			if err != nil || m > 0o7777 {
				return nil, fmt.Errorf("--copy: %q: mode %q is not octal like 0755", c, parts[2])
			}
			mode = uint32(m)
		}
		total += len(data)
		files = append(files, File{Path: parts[1], Mode: mode, Data: data})
	}
	if len(keys) > 0 {
		var all []byte
		for _, k := range keys {
			data, err := os.ReadFile(k)
			if err != nil {
				return nil, fmt.Errorf("--authorized-key: %s: %v", k, err)
			}
			if !strings.HasPrefix(strings.TrimSpace(string(data)), "ssh-") && !strings.HasPrefix(strings.TrimSpace(string(data)), "ecdsa-") {
				return nil, fmt.Errorf("--authorized-key: %s does not look like an SSH public key", k)
			}
			all = append(all, data...)
			if len(data) > 0 && data[len(data)-1] != '\n' {
				all = append(all, '\n')
			}
		}
		total += len(all)
		files = append(files, File{Path: "/root/.ssh", Mode: 0o700, Dir: true},
			File{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Data: all})
	}
	if Size(total) > MaxFilesSize {
		return nil, fmt.Errorf("--copy: %d bytes in all, more than %s (they travel in the initrd)", total, MaxFilesSize)
	}
	return files, nil
}

// Process is what runs in the VM: a command with its environment, working directory and
// user. A container image's config supplies defaults for what the user left empty.
type Process struct {
	Cmd     []string `json:"cmd,omitempty"`
	Env     []string `json:"env,omitempty"`
	WorkDir string   `json:"workdir,omitempty"`
	// User is NAME|UID[:GROUP|GID], resolved in the guest from the image's files.
	User string `json:"user,omitempty"`
	// Stdin keeps the process's stdin open to the host (`-i`); TTY gives it a terminal of
	// that size (`-t`).
	Stdin bool      `json:"stdin,omitempty"`
	TTY   *Terminal `json:"tty,omitempty"`
	// Rlimits are the workload's resource limits ("nofile", "nproc", ...: the names of
	// vmconfig.RlimitResources); none means firegopher's defaults.
	Rlimits []Rlimit `json:"rlimits,omitempty"`
}

// Rlimit is one resource limit of a process.
type Rlimit struct {
	Resource string `json:"resource"`
	Soft     uint64 `json:"soft"`
	Hard     uint64 `json:"hard"`
}

// Terminal is a terminal's size in characters.
type Terminal struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}
