package run

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"gopkg.in/yaml.v3"

	"github.com/firegopher/firegopher/internal/spec"
)

// Groups of a run, as in kernel-testing's vars files and inventory.
const (
	GroupMachines = "machines"
	GroupBuilders = "builders"
)

// Limits that run_id and machine names must fit, because of what they become.
const (
	// MaxVMIDLen is Firecracker's limit on --id, which kernel-testing sets to
	// "<name with . as ->-<run_id>".
	MaxVMIDLen = 64
	// MaxSocketPathLen is the longest Unix socket path (sun_path is 108 bytes with its NUL);
	// kernel-testing puts each VM's API socket at /tmp/<run_id>-<name>.sock.
	MaxSocketPathLen = 107
)

// Run is a run of machines as described by kernel-testing vars files, validated.
type Run struct {
	ID          string        // run_id
	User        string        // user: the guests' login user (their plays' remote_user)
	TimeOut     time.Duration // time_out: how long up waits for all machines to accept SSH
	SSHKeyDir   string        // ssh_key_path: created 0755; their known_hosts lives here
	PrivateKey  string        // prv_key_path, ~ expanded; relative paths stay relative to the cwd
	PublicKey   string        // pub_key_path, likewise; copied into each guest's authorized_keys
	CPUs        int           // cpus, per machine
	MemoryMiB   int           // memory, per machine, MiB
	DiskSize    int64         // disk_size (firegopher), bytes, per machine root disk
	DNS         []netip.Addr  // dns (firegopher): DHCP option 6
	KernelArgs  string        // kernel_args (firegopher): appended to "rw console=ttyS0"
	RuntimeRoot string        // runtime_root, ~ expanded: per-run files go to <runtime_root>/<run_id>
	PlaybookDir string        // the value {{ playbook_dir }} had
	Arch        string        // the host architecture machines were selected for (uname -m)
	Machines    []Machine     // selected machines, then selected builders, in file order
	Skipped     []Machine     // entries for other architectures (Name, Group, Arch, Where only)
}

// Machine is one entry of machines: or builders: for the host's architecture.
type Machine struct {
	Name   string // VM name, inventory host name, input of the address hash
	Group  string // GroupMachines or GroupBuilders
	Kernel string // OCI ref of a kernel image, as written (no registry host means Docker Hub)
	Rootfs string // OCI ref of a container image to flatten into the root disk
	Arch   string // x86_64, aarch64, ... (uname -m)
	Where  string // "file:line" of the entry, for messages
}

// LoadOptions says what Ansible would know that the vars files do not.
type LoadOptions struct {
	// PlaybookDir is {{ playbook_dir }}. Default: for a first file inside
	// <dir>/group_vars/all/ (kernel-testing's ansible-playbooks/group_vars/all/vars.yml) or
	// named <dir>/group_vars/all.yml, that <dir>, i.e. where the playbooks are; otherwise
	// the first file's directory. Made absolute, as Ansible's is.
	PlaybookDir string
	// HostArch is the architecture machines are selected for, uname -m style; Go's names
	// are accepted (amd64 → x86_64, arm64 → aarch64). Default: this binary's GOARCH.
	HostArch string
	// Home expands a leading ~ in key and runtime paths. Default: os.UserHomeDir.
	Home string
	// Logger receives warnings (a key repeated within one file). Default: discarded.
	Logger *slog.Logger
}

// DefaultsName is how errors name the built-in defaults (without a line: users never see
// that file).
const DefaultsName = "built-in default"

// defaultVars sit under the user's files, so a file that only sets run_id and machines is
// enough. Values and templates are kernel-testing's shipped ones (v0.4.0), plus the keys
// only firegopher reads:
//
//	disk_size   size of each machine's sparse root disk: K, M, G, T (binary); a bare number
//	            is MiB. Default 5G, like theirs.
//	dns         the DNS server(s) DHCP hands out, an IPv4 address or a list. Default 1.1.1.1.
//	kernel_args extra kernel command line appended to "rw console=ttyS0" (e.g. DEBUG).
//
// Their playbooks ignore these keys, so one vars file serves both tools.
const defaultVars = `time_out: 600
user: root
cpus: 2
memory: 2048
builders: []
ssh_key_path: "/root/.ssh"
ssh_key_name: firecracker_machines
prv_key_path: "{{ ssh_key_path }}/{{ ssh_key_name }}"
pub_key_path: "{{ ssh_key_path }}/{{ ssh_key_name }}.pub"
runtime_root: "{{ playbook_dir }}/runtime"
disk_size: 5G
dns: 1.1.1.1
kernel_args: ""
`

// Load reads kernel-testing vars files the way Ansible reads group_vars plus
// --extra-vars @file: files are merged per top-level key with later files winning
// (hash_behaviour=replace: a mapping such as repos is replaced whole), then `{{ var }}`
// templates are resolved against the merged variables (nested, inside strings, lists and
// mappings, plus {{ playbook_dir }}). Like Ansible, only what is read is templated: keys
// firegopher does not use (output_dir, repos, ...) may hold templates it cannot evaluate.
// Machines and builders are then selected for the host architecture and validated for the
// names, ids and socket paths they become. Errors are one line with file:line and the key
// path.
func Load(files []string, opts LoadOptions) (*Run, error) {
	if len(files) == 0 {
		return nil, errors.New("no vars files given")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	arch := NormalizeArch(opts.HostArch)
	pbDir := opts.PlaybookDir
	if pbDir == "" {
		pbDir = defaultPlaybookDir(files[0])
	}
	pbDir, err := filepath.Abs(pbDir)
	if err != nil {
		return nil, fmt.Errorf("playbook_dir: %w", err)
	}

	r := &resolver{vars: map[string]*variable{}, builtin: map[string]string{"playbook_dir": pbDir}}
	if err := r.add(DefaultsName, []byte(defaultVars), log); err != nil {
		return nil, fmt.Errorf("built-in defaults: %w", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("vars file: %w", err)
		}
		if err := r.add(f, data, log); err != nil {
			return nil, err
		}
	}

	home := opts.Home
	x := &extractor{r: r, home: func() (string, error) {
		if home != "" {
			return home, nil
		}
		return os.UserHomeDir()
	}}
	run := &Run{PlaybookDir: pbDir, Arch: arch}
	steps := []func(*Run) error{
		x.runID, x.user, x.timeOut, x.cpus, x.memory, x.diskSize, x.dns, x.kernelArgs,
		x.keys, x.runtimeRoot, x.machines,
	}
	for _, step := range steps {
		if err := step(run); err != nil {
			return nil, err
		}
	}
	return run, nil
}

// NormalizeArch maps Go/Docker architecture names to uname -m names; "" is this binary's.
func NormalizeArch(a string) string {
	if a == "" {
		a = runtime.GOARCH
	}
	switch a {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return a
}

// defaultPlaybookDir is where the playbooks are, judged from the first vars file's path.
func defaultPlaybookDir(first string) string {
	dir := filepath.Dir(filepath.Clean(first))
	base := filepath.Base(first)
	switch {
	case filepath.Base(dir) == "all" && filepath.Base(filepath.Dir(dir)) == "group_vars":
		return filepath.Dir(filepath.Dir(dir))
	case filepath.Base(dir) == "group_vars" && (base == "all.yml" || base == "all.yaml" || base == "all"):
		return filepath.Dir(dir)
	}
	return dir
}

// add parses one vars file and lays its top-level keys over the ones already read.
func (r *resolver) add(file string, data []byte, log *slog.Logger) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil // an empty file sets nothing
		}
		return yamlError(file, err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err != io.EOF {
		if err != nil {
			return yamlError(file, err)
		}
		return fmt.Errorf("%s:%d: more than one YAML document", file, next.Line)
	}
	root := doc.Content[0]
	for root.Kind == yaml.AliasNode {
		root = root.Alias
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: must be a mapping of variable names to values", file, root.Line)
	}
	pairs, err := mappingPairs(root, file)
	if err != nil {
		return err
	}
	seen := map[string]int{}
	for _, p := range pairs {
		if !p.merged { // overriding a merged key is what merge keys are for
			if line, dup := seen[p.key]; dup {
				log.Warn("vars file repeats a key; the last one wins", "file", file, "key", p.key,
					"line", p.keyNode.Line, "first", line)
			}
			seen[p.key] = p.keyNode.Line
		}
		r.vars[p.key] = &variable{file: file, node: p.val}
	}
	return nil
}

var yamlLineError = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError turns yaml.v3's "yaml: line N: msg" into "file:N: msg".
func yamlError(file string, err error) error {
	msg := err.Error()
	if m := yamlLineError.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: %s", file, m[1], m[2])
	}
	return fmt.Errorf("%s: %s", file, strings.TrimPrefix(msg, "yaml: "))
}

// extractor reads the typed fields of a Run out of the resolved variables.
type extractor struct {
	r    *resolver
	home func() (string, error)
}

// get resolves a top-level variable; nil when no file (nor the defaults) sets it.
func (x *extractor) get(key string) (*value, error) {
	if _, ok := x.r.vars[key]; !ok {
		return nil, nil
	}
	return x.r.lookup(key, "", key)
}

// str reads a scalar as a string ("" for an empty value).
func str(v *value, path string) (string, error) {
	if v.isNull() {
		return "", nil
	}
	if v.kind != yaml.ScalarNode {
		return "", fmt.Errorf("%s: %s: must be a string, not %s", v.pos, path, v.kindName())
	}
	return v.text, nil
}

// integer reads a YAML integer or a string holding a decimal integer.
func integer(v *value, path string) (int64, error) {
	if v.isNull() || v.kind != yaml.ScalarNode || v.tag == "!!bool" {
		return 0, fmt.Errorf("%s: %s: must be a number, not %s", v.pos, path, v.kindName())
	}
	var n int64
	var err error
	switch v.tag {
	case "!!int":
		n, err = parseYAMLInt(v.text)
	case "!!str":
		n, err = strconv.ParseInt(strings.TrimSpace(v.text), 10, 64)
	default:
		err = errors.New("not an integer")
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %s: %q is not a whole number", v.pos, path, v.text)
	}
	return n, nil
}

// required reads a top-level key that must be set.
func (x *extractor) required(key string) (*value, error) {
	v, err := x.get(key)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, fmt.Errorf("%s: not set in any vars file", key)
	}
	return v, nil
}

// nonEmptyString reads a required string key that must not be empty.
func (x *extractor) nonEmptyString(key string) (string, *value, error) {
	v, err := x.required(key)
	if err != nil {
		return "", nil, err
	}
	s, err := str(v, key)
	if err != nil {
		return "", nil, err
	}
	if s == "" {
		return "", nil, fmt.Errorf("%s: %s: must not be empty", v.pos, key)
	}
	return s, v, nil
}

// runIDChars is what Firecracker accepts in an instance id (run_id is part of it).
var runIDChars = regexp.MustCompile(`^[A-Za-z0-9-]+$`)

func (x *extractor) runID(r *Run) error {
	s, v, err := x.nonEmptyString("run_id")
	if err != nil {
		return err
	}
	if !runIDChars.MatchString(s) {
		return fmt.Errorf("%s: run_id: %q may only contain letters, digits and \"-\" (it becomes part of Firecracker VM ids)", v.pos, s)
	}
	r.ID = s
	return nil
}

// noSpace rejects values that a line of inventory.ini cannot carry unquoted.
func noSpace(s string, v *value, key string) error {
	if strings.ContainsAny(s, " \t\r\n'\"") {
		return fmt.Errorf("%s: %s: %q contains whitespace or quotes, which inventory.ini cannot carry", v.pos, key, s)
	}
	return nil
}

func (x *extractor) user(r *Run) error {
	s, v, err := x.nonEmptyString("user")
	if err != nil {
		return err
	}
	if err := noSpace(s, v, "user"); err != nil {
		return err
	}
	r.User = s
	return nil
}

func (x *extractor) positive(key string, min int64, unit string) (int64, *value, error) {
	v, err := x.required(key)
	if err != nil {
		return 0, nil, err
	}
	n, err := integer(v, key)
	if err != nil {
		return 0, nil, err
	}
	if n < min {
		return 0, nil, fmt.Errorf("%s: %s: must be at least %d%s, got %d", v.pos, key, min, unit, n)
	}
	return n, v, nil
}

func (x *extractor) timeOut(r *Run) error {
	n, v, err := x.positive("time_out", 1, " (seconds)")
	if err != nil {
		return err
	}
	if n > int64(365*24*time.Hour/time.Second) {
		return fmt.Errorf("%s: time_out: %d seconds is more than a year", v.pos, n)
	}
	r.TimeOut = time.Duration(n) * time.Second
	return nil
}

func (x *extractor) cpus(r *Run) error {
	n, v, err := x.positive("cpus", 1, "")
	if err != nil {
		return err
	}
	if n > 1024 {
		return fmt.Errorf("%s: cpus: %d is more than any VMM allows", v.pos, n)
	}
	r.CPUs = int(n)
	return nil
}

// minMemoryMiB is the smallest memory we believe is meant as MiB; kernel-testing v0.3.x
// wrote memory in GB (2), v0.4.0 in MiB (2048).
const minMemoryMiB = 64

func (x *extractor) memory(r *Run) error {
	v, err := x.required("memory")
	if err != nil {
		return err
	}
	n, err := integer(v, "memory")
	if err != nil {
		return err
	}
	if n <= minMemoryMiB {
		hint := "e.g. 2048"
		if n > 0 {
			hint = fmt.Sprintf("%d GB is %d", n, n*1024)
		}
		return fmt.Errorf("%s: memory: %d MiB is too small: since kernel-testing v0.4.0 memory is in MiB (%s)", v.pos, n, hint)
	}
	if n > 1<<24 {
		return fmt.Errorf("%s: memory: %d MiB is more than 16 TiB", v.pos, n)
	}
	r.MemoryMiB = int(n)
	return nil
}

func (x *extractor) diskSize(r *Run) error {
	v, err := x.required("disk_size")
	if err != nil {
		return err
	}
	var s string
	if v.kind == yaml.ScalarNode && v.tag == "!!int" {
		s = v.text // a bare number: MiB, as spec.ParseSize reads it
	} else if s, err = str(v, "disk_size"); err != nil {
		return err
	}
	size, err := spec.ParseSize("disk_size", s)
	if err != nil {
		return fmt.Errorf("%s: %w", v.pos, err)
	}
	if size < spec.MiB {
		return fmt.Errorf("%s: disk_size: %q is smaller than 1M", v.pos, s)
	}
	r.DiskSize = int64(size)
	return nil
}

func (x *extractor) dns(r *Run) error {
	v, err := x.required("dns")
	if err != nil {
		return err
	}
	items, paths := []*value{v}, []string{"dns"}
	if v.kind == yaml.SequenceNode {
		items, paths = v.items, nil
		for i := range items {
			paths = append(paths, fmt.Sprintf("dns[%d]", i))
		}
		if len(items) == 0 {
			return fmt.Errorf("%s: dns: must name at least one IPv4 address", v.pos)
		}
	}
	for i, it := range items {
		s, err := str(it, paths[i])
		if err != nil {
			return err
		}
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !a.Is4() {
			return fmt.Errorf("%s: %s: %q is not an IPv4 address", it.pos, paths[i], s)
		}
		r.DNS = append(r.DNS, a)
	}
	return nil
}

func (x *extractor) kernelArgs(r *Run) error {
	v, err := x.required("kernel_args")
	if err != nil {
		return err
	}
	s, err := str(v, "kernel_args")
	if err != nil {
		return err
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return fmt.Errorf("%s: kernel_args: must be one line", v.pos)
	}
	r.KernelArgs = strings.TrimSpace(s)
	return nil
}

// path reads a path key: non-empty, ~ expanded.
func (x *extractor) path(key string) (string, *value, error) {
	s, v, err := x.nonEmptyString(key)
	if err != nil {
		return "", nil, err
	}
	if s == "~" || strings.HasPrefix(s, "~/") {
		home, err := x.home()
		if err != nil {
			return "", nil, fmt.Errorf("%s: %s: cannot expand ~: %w", v.pos, key, err)
		}
		s = filepath.Join(home, s[1:])
	}
	return s, v, nil
}

func (x *extractor) keys(r *Run) error {
	var err error
	if r.SSHKeyDir, _, err = x.path("ssh_key_path"); err != nil {
		return err
	}
	var pub *value
	for _, k := range []struct {
		key string
		dst *string
	}{{"prv_key_path", &r.PrivateKey}, {"pub_key_path", &r.PublicKey}} {
		s, v, err := x.path(k.key)
		if err != nil {
			return err
		}
		if err := noSpace(s, v, k.key); err != nil {
			return err
		}
		*k.dst, pub = s, v
	}
	if filepath.Clean(r.PrivateKey) == filepath.Clean(r.PublicKey) {
		return fmt.Errorf("%s: pub_key_path: %q is also prv_key_path", pub.pos, r.PublicKey)
	}
	return nil
}

func (x *extractor) runtimeRoot(r *Run) error {
	var err error
	r.RuntimeRoot, _, err = x.path("runtime_root")
	return err
}

// machineNameChars is what a name may hold: Firecracker ids allow letters, digits and "-",
// and kernel-testing turns "." into "-" (fedora-6.2 → fedora-6-2-<run_id>).
var machineNameChars = regexp.MustCompile(`^[A-Za-z0-9.-]+$`)

// VMID is the Firecracker --id kernel-testing gives a machine: the name with "." as "-",
// then "-", then the run id.
func VMID(runID, name string) string {
	return strings.ReplaceAll(name, ".", "-") + "-" + runID
}

// APISocketPath is the Firecracker API socket kernel-testing gives a machine (in /tmp to
// stay under the socket path limit).
func APISocketPath(runID, name string) string {
	return "/tmp/" + runID + "-" + name + ".sock"
}

// seen is where a selected name (or VM id) was first used.
type seen struct{ path, pos, name string }

func (x *extractor) machines(r *Run) error {
	names := map[string]seen{}
	ids := map[string]seen{}
	total := 0
	for _, group := range []string{GroupMachines, GroupBuilders} {
		v, err := x.required(group)
		if err != nil {
			return err
		}
		if v.isNull() {
			continue
		}
		if v.kind != yaml.SequenceNode {
			return fmt.Errorf("%s: %s: must be a list of {name, kernel, rootfs, arch}, not %s", v.pos, group, v.kindName())
		}
		for i, item := range v.items {
			total++
			path := fmt.Sprintf("%s[%d]", group, i)
			m, selected, err := x.machine(item, path, group, r.Arch)
			if err != nil {
				return err
			}
			if !selected {
				r.Skipped = append(r.Skipped, m)
				continue
			}
			if err := checkMachineName(r.ID, m.Name, item.vals["name"].pos, path); err != nil {
				return err
			}
			if first, dup := names[m.Name]; dup {
				return fmt.Errorf("%s: %s.name: %q is also %s.name (%s)", item.vals["name"].pos, path, m.Name, first.path, first.pos)
			}
			names[m.Name] = seen{path, item.vals["name"].pos, m.Name}
			id := VMID(r.ID, m.Name)
			if first, dup := ids[id]; dup {
				return fmt.Errorf("%s: %s.name: %q and %s.name %q (%s) both become VM id %q", item.vals["name"].pos, path, m.Name, first.path, first.name, first.pos, id)
			}
			ids[id] = seen{path, item.vals["name"].pos, m.Name}
			r.Machines = append(r.Machines, m)
		}
	}
	if len(r.Machines) == 0 {
		return fmt.Errorf("machines, builders: none of the %d entries is for this host's architecture %s", total, r.Arch)
	}
	return nil
}

// knownArchs are the uname -m names of the architectures Linux runs VMs on.
var knownArchs = map[string]bool{
	"x86_64": true, "aarch64": true, "i686": true, "i386": true, "armv7l": true,
	"riscv64": true, "s390x": true, "ppc64le": true, "ppc64": true, "loongarch64": true,
	"mips64": true,
}

// machine reads one entry; selected is false for another architecture (then only Name,
// Group, Arch and Where are read: Ansible never looks at the rest either).
func (x *extractor) machine(v *value, path, group, hostArch string) (m Machine, selected bool, err error) {
	m = Machine{Group: group, Where: v.pos}
	if v.kind != yaml.MappingNode {
		return m, false, fmt.Errorf("%s: %s: must be a mapping {name, kernel, rootfs, arch}, not %s", v.pos, path, v.kindName())
	}
	field := func(key string) (string, error) {
		f, ok := v.vals[key]
		if !ok || f.isNull() {
			return "", fmt.Errorf("%s: %s: missing %s", v.pos, path, key)
		}
		s, err := str(f, path+"."+key)
		if err != nil {
			return "", err
		}
		if strings.TrimSpace(s) == "" {
			return "", fmt.Errorf("%s: %s.%s: must not be empty", f.pos, path, key)
		}
		return s, nil
	}
	if m.Arch, err = field("arch"); err != nil {
		return m, false, err
	}
	switch {
	case m.Arch == "amd64" || m.Arch == "arm64":
		return m, false, fmt.Errorf("%s: %s.arch: %q is not a uname -m name: use %q", v.vals["arch"].pos, path, m.Arch, NormalizeArch(m.Arch))
	case !knownArchs[m.Arch]:
		// Ansible would skip such an entry on every host; a typo should not drop a machine
		// silently.
		return m, false, fmt.Errorf("%s: %s.arch: %q is not an architecture (uname -m: x86_64, aarch64, ...)", v.vals["arch"].pos, path, m.Arch)
	}
	if m.Arch != hostArch {
		if f, ok := v.vals["name"]; ok && f.kind == yaml.ScalarNode {
			m.Name = f.text
		}
		return m, false, nil
	}
	if m.Name, err = field("name"); err != nil {
		return m, false, err
	}
	for _, f := range []struct {
		key string
		dst *string
	}{{"kernel", &m.Kernel}, {"rootfs", &m.Rootfs}} {
		s, err := field(f.key)
		if err != nil {
			return m, false, err
		}
		if !ociLayoutRef.MatchString(s) && !validRef(s) {
			return m, false, fmt.Errorf("%s: %s.%s: %q is not an image reference", v.vals[f.key].pos, path, f.key, s)
		}
		*f.dst = s
	}
	return m, true, nil
}

// ociLayoutRef is the puller's local OCI layout form, oci:<dir> or oci-layout:<dir>
// (internal/assets/oci), which is not a registry reference.
var ociLayoutRef = regexp.MustCompile(`^oci(-layout)?:[./]`)

// validRef is whether the puller will be able to parse ref (it uses the same parser);
// checking here gives the error a file and line.
func validRef(ref string) bool {
	_, err := name.ParseReference(ref)
	return err == nil
}

// checkMachineName checks what a selected machine's name becomes: part of the Firecracker
// id and of the API socket path. (The TAP name comes from a hash and always fits.)
func checkMachineName(runID, n, pos, path string) error {
	if !machineNameChars.MatchString(n) {
		return fmt.Errorf("%s: %s.name: %q may only contain letters, digits, \".\" and \"-\" (it becomes part of a Firecracker VM id)", pos, path, n)
	}
	// The socket path is 10 bytes longer than the VM id, so today only a name far over the
	// id limit trips it; it is checked first so that it stays checked if either limit moves.
	if sock := APISocketPath(runID, n); len(sock) > MaxSocketPathLen {
		return fmt.Errorf("%s: %s.name: API socket %q is %d bytes, the limit is %d (shorten run_id or the name)", pos, path, sock, len(sock), MaxSocketPathLen)
	}
	if id := VMID(runID, n); len(id) > MaxVMIDLen {
		return fmt.Errorf("%s: %s.name: VM id %q is %d characters, Firecracker allows %d (shorten run_id or the name)", pos, path, id, len(id), MaxVMIDLen)
	}
	return nil
}
