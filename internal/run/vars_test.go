package run

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// load writes contents as vars.yml, local.yml, ... in a fresh directory, changes into it
// (so errors name the files as the user typed them) and loads them for an x86_64 host.
func load(t *testing.T, contents ...string) (*Run, error) {
	t.Helper()
	t.Chdir(t.TempDir())
	names := []string{"vars.yml", "local.yml", "third.yml"}[:len(contents)]
	for i, c := range contents {
		if err := os.WriteFile(names[i], []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Load(names, LoadOptions{PlaybookDir: "/pb", HostArch: "x86_64", Home: "/home/u"})
}

const minimal = `run_id: r1
machines:
  - {name: m1, kernel: k1, rootfs: r1, arch: x86_64}
`

func TestLoadShippedVarsWithActionOverride(t *testing.T) {
	shipped := filepath.Join("testdata", "ansible-playbooks", "group_vars", "all", "vars.yml")
	pb, err := filepath.Abs(filepath.Join("testdata", "ansible-playbooks"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load([]string{shipped, filepath.Join("testdata", "action-vars.yml")}, LoadOptions{HostArch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	const repo = "ghcr.io/falcosecurity/kernel-testing/"
	at := func(line int) string { return shipped + ":" + strconv.Itoa(line) }
	want := &Run{
		ID:          "id-1234567890",
		User:        "root",
		TimeOut:     600 * time.Second,
		SSHKeyDir:   "/root/.ssh",
		PrivateKey:  "/root/.ssh/firecracker_machines",
		PublicKey:   "/root/.ssh/firecracker_machines.pub",
		CPUs:        2,
		MemoryMiB:   2048,
		DiskSize:    5 << 30,
		DNS:         []netip.Addr{netip.MustParseAddr("1.1.1.1")},
		RuntimeRoot: pb + "/runtime",
		PlaybookDir: pb,
		Arch:        "x86_64",
		Machines: []Machine{
			{"amazonlinux2023-6.1", "machines", repo + "amazonlinux2023-kernel:6.1-x86_64-v0.4.0", repo + "amazonlinux2023-image:6.1-x86_64-v0.4.0", "x86_64", at(19)},
			{"centos-3.10", "machines", repo + "centos-kernel:3.10-x86_64-v0.4.0", repo + "centos-image:3.10-x86_64-v0.4.0", "x86_64", at(20)},
			{"fedora-6.2", "machines", repo + "fedora-kernel:6.2-x86_64-v0.4.0", repo + "fedora-image:6.2-x86_64-v0.4.0", "x86_64", at(21)},
			{"ubuntu-6.5", "machines", repo + "ubuntu-kernel:6.5-x86_64-v0.4.0", repo + "ubuntu-image:6.5-x86_64-v0.4.0", "x86_64", at(22)},
			{"centos-builder", "builders", repo + "ubuntu-kernel:6.5-x86_64-v0.4.0", repo + "builder:x86_64-v0.4.0", "x86_64", at(27)},
			{"fedora-builder", "builders", repo + "fedora-kernel:6.2-x86_64-v0.4.0", repo + "modernprobe-builder:x86_64-v0.4.0", "x86_64", at(28)},
		},
		Skipped: []Machine{
			{Name: "fedora-6.2", Group: "machines", Arch: "aarch64", Where: at(23)},
			{Name: "ubuntu-6.5", Group: "machines", Arch: "aarch64", Where: at(24)},
			{Name: "centos-builder", Group: "builders", Arch: "aarch64", Where: at(29)},
			{Name: "fedora-builder", Group: "builders", Arch: "aarch64", Where: at(30)},
		},
	}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", r, want)
	}
}

func TestLoadShippedVarsAarch64(t *testing.T) {
	shipped := filepath.Join("testdata", "ansible-playbooks", "group_vars", "all", "vars.yml")
	r, err := Load([]string{shipped}, LoadOptions{HostArch: "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range r.Machines {
		got = append(got, m.Name+" "+m.Kernel)
	}
	want := []string{
		"fedora-6.2 ghcr.io/falcosecurity/kernel-testing/fedora-kernel:6.2-aarch64-main",
		"ubuntu-6.5 ghcr.io/falcosecurity/kernel-testing/ubuntu-kernel:6.5-aarch64-v0.3.2",
		"centos-builder ghcr.io/falcosecurity/kernel-testing/ubuntu-kernel:6.5-aarch64-main",
		"fedora-builder ghcr.io/falcosecurity/kernel-testing/fedora-kernel:6.2-aarch64-main",
	}
	if !reflect.DeepEqual(got, want) || r.ID != "here-goes-the-id" || r.Arch != "aarch64" {
		t.Errorf("aarch64 selection: got %q (run %q, arch %q), want %q", got, r.ID, r.Arch, want)
	}
}

func TestDefaultPlaybookDir(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"/k/ansible-playbooks/group_vars/all/vars.yml", "/k/ansible-playbooks"},
		{"/k/ansible-playbooks/group_vars/all/other.yaml", "/k/ansible-playbooks"},
		{"/k/ansible-playbooks/group_vars/all.yml", "/k/ansible-playbooks"},
		{"/home/me/my-vars.yml", "/home/me"},
		{"group_vars/all/vars.yml", "."},
		{"vars.yml", "."},
		{"/k/all/vars.yml", "/k/all"},
	} {
		if got := defaultPlaybookDir(c.file); got != c.want {
			t.Errorf("defaultPlaybookDir(%q) = %q, want %q", c.file, got, c.want)
		}
	}
}

func TestNormalizeArch(t *testing.T) {
	for in, want := range map[string]string{"amd64": "x86_64", "arm64": "aarch64", "x86_64": "x86_64", "aarch64": "aarch64", "riscv64": "riscv64"} {
		if got := NormalizeArch(in); got != want {
			t.Errorf("NormalizeArch(%q) = %q, want %q", in, got, want)
		}
	}
	if NormalizeArch("") == "" || NormalizeArch("") == "amd64" || NormalizeArch("") == "arm64" {
		t.Errorf("NormalizeArch(\"\") = %q, want this host's uname -m name", NormalizeArch(""))
	}
}

// TestLoad checks merging and templating through the fields they end up in.
func TestLoad(t *testing.T) {
	m := func(r *Run) any {
		var s []string
		for _, x := range r.Machines {
			s = append(s, x.Group+"/"+x.Name+" "+x.Kernel+" "+x.Rootfs)
		}
		return s
	}
	for _, c := range []struct {
		name  string
		files []string
		get   func(*Run) any
		want  any
	}{
		{"later file wins per key", []string{minimal + "cpus: 4\nmemory: 4096\n", "cpus: 8\n"},
			func(r *Run) any { return [2]int{r.CPUs, r.MemoryMiB} }, [2]int{8, 4096}},
		{"lists are replaced, not appended", []string{minimal, "machines:\n  - {name: m2, kernel: kern2, rootfs: root2, arch: x86_64}\n"},
			m, []string{"machines/m2 kern2 root2"}},
		{"mappings are replaced whole (hash_behaviour=replace)", []string{
			minimal + "img: {kernel: k1, rootfs: r1}\n",
			"img: {kernel: k9}\nbuilders: [{name: b, kernel: \"{{ img_kernel }}\", rootfs: root, arch: x86_64}]\nimg_kernel: \"{{ k }}\"\nk: kk\n"},
			m, []string{"machines/m1 k1 r1", "builders/b kk root"}},
		{"lazy: a later tag changes refs written in the first file", []string{
			"run_id: r1\ntag: main\nrepo: ghcr.io/o/kt\nmachines:\n  - {name: u, kernel: \"{{ repo }}/u-kernel:6.5-x86_64-{{ tag }}\", rootfs: \"{{repo}}/u-image:6.5-x86_64-{{tag}}\", arch: x86_64}\n",
			"tag: v0.4.0\n"},
			m, []string{"machines/u ghcr.io/o/kt/u-kernel:6.5-x86_64-v0.4.0 ghcr.io/o/kt/u-image:6.5-x86_64-v0.4.0"}},
		{"nested, both spacings", []string{minimal + "ssh_key_path: \"{{home}}/.ssh\"\nhome: \"{{ base }}/me\"\nbase: /home\nssh_key_name: k\n"},
			func(r *Run) any { return [3]string{r.SSHKeyDir, r.PrivateKey, r.PublicKey} },
			[3]string{"/home/me/.ssh", "/home/me/.ssh/k", "/home/me/.ssh/k.pub"}},
		{"v0.3.x style keys", []string{minimal + "ssh_key_path: \"/root/.ssh/\"\nssh_key_name: ignite_machines\nprv_key_path: \"{{ssh_key_path}}{{ssh_key_name}}\"\n"},
			func(r *Run) any { return r.PrivateKey }, "/root/.ssh/ignite_machines"},
		{"playbook_dir", []string{minimal + "runtime_root: \"{{ playbook_dir }}/rt\"\n"},
			func(r *Run) any { return [2]string{r.RuntimeRoot, r.PlaybookDir} }, [2]string{"/pb/rt", "/pb"}},
		{"default runtime_root under playbook_dir", []string{minimal},
			func(r *Run) any { return r.RuntimeRoot }, "/pb/runtime"},
		{"whole-string template keeps the number", []string{minimal + "n: 3\ncpus: \"{{ n }}\"\nmemory: \"{{ mem }}\"\nmem: '4096'\n"},
			func(r *Run) any { return [2]int{r.CPUs, r.MemoryMiB} }, [2]int{3, 4096}},
		{"whole-string template takes a list", []string{"run_id: r1\nall_vms:\n  - {name: a, kernel: kern, rootfs: root, arch: x86_64}\nmachines: \"{{ all_vms }}\"\n"},
			m, []string{"machines/a kern root"}},
		{"numeric strings and YAML integer forms", []string{minimal + "cpus: ' 3 '\nmemory: 0x800\ntime_out: \"30\"\n"},
			func(r *Run) any { return [3]int{r.CPUs, r.MemoryMiB, int(r.TimeOut / time.Second)} }, [3]int{3, 2048, 30}},
		{"interpolated scalars read as Python's str()", []string{"run_id: r1\nflag: true\nhex: 0x10\nnothing:\nmachines:\n  - {name: \"m-{{ flag }}-{{ hex }}{{ nothing }}\", kernel: kern, rootfs: root, arch: x86_64}\n"},
			m, []string{"machines/m-True-16 kern root"}},
		{"run_id from a template", []string{"machines:\n  - {name: m, kernel: kern, rootfs: root, arch: x86_64}\nrun_id: \"id-{{ gh }}\"\ngh: 1234567890\n"},
			func(r *Run) any { return r.ID }, "id-1234567890"},
		{"!unsafe is never templated", []string{minimal + "kernel_args: !unsafe \"DEBUG {{ x }}\"\n"},
			func(r *Run) any { return r.KernelArgs }, "DEBUG {{ x }}"},
		{"top-level merge keys", []string{"common: &c {cpus: 3, memory: 4096}\n<<: *c\nmemory: 8192\n" + minimal},
			func(r *Run) any { return [2]int{r.CPUs, r.MemoryMiB} }, [2]int{3, 8192}},
		{"merge keys", []string{"run_id: r1\nbase: &b {kernel: kern, rootfs: root, arch: x86_64}\nother: &o {kernel: ko, rootfs: ro}\nmachines:\n  - {<<: *b, name: m1}\n  - {<<: [*o, *b], name: m2, rootfs: own}\n"},
			m, []string{"machines/m1 kern root", "machines/m2 ko own"}},
		{"keys that are not read may hold anything", []string{minimal + "output_dir: \"{{ lookup('env', 'HOME') }}/out\"\nrepos: {libs: {name: \"{{ x | lower }}\"}}\nscratch: \"{{ undefined_thing }}\"\n"},
			func(r *Run) any { return r.ID }, "r1"},
		{"unknown per-machine fields are ignored", []string{"run_id: r1\nmachines:\n  - {name: m, kernel: kern, rootfs: root, arch: x86_64, skip_legacy_bpf_tests: true}\n"},
			m, []string{"machines/m kern root"}},
		{"refs without a registry host are kept as written", []string{"run_id: r1\nmachines:\n  - {name: al, kernel: therealbobo/amazonlinux2022-kernel:5.15-x86_64, rootfs: \"ubuntu:22.04\", arch: x86_64}\n"},
			m, []string{"machines/al therealbobo/amazonlinux2022-kernel:5.15-x86_64 ubuntu:22.04"}},
		{"other architectures are skipped, even with a name of this one", []string{"run_id: r1\nmachines:\n  - {name: u, kernel: ka, rootfs: ra, arch: aarch64}\n  - {name: u, kernel: kx, rootfs: rx, arch: x86_64}\n  - {name: v, arch: riscv64}\n"},
			func(r *Run) any { return [2]any{m(r), len(r.Skipped)} }, [2]any{[]string{"machines/u kx rx"}, 2}},
		{"builders may be absent, null or empty", []string{minimal + "builders:\n"},
			func(r *Run) any { return len(r.Machines) }, 1},
		{"~ is expanded in paths", []string{minimal + "ssh_key_path: ~/.ssh\nruntime_root: \"~\"\n"},
			func(r *Run) any { return [3]string{r.PrivateKey, r.PublicKey, r.RuntimeRoot} },
			[3]string{"/home/u/.ssh/firecracker_machines", "/home/u/.ssh/firecracker_machines.pub", "/home/u"}},
		{"defaults as shipped", []string{minimal},
			func(r *Run) any {
				return [8]any{r.User, r.TimeOut, r.CPUs, r.MemoryMiB, r.PrivateKey, r.DiskSize, r.DNS, r.KernelArgs}
			},
			[8]any{"root", 600 * time.Second, 2, 2048, "/root/.ssh/firecracker_machines", int64(5 << 30), []netip.Addr{netip.MustParseAddr("1.1.1.1")}, ""}},
		{"firegopher keys", []string{minimal + "disk_size: 10G\ndns: [9.9.9.9, \"{{ dns2 }}\"]\ndns2: 149.112.112.112\nkernel_args: DEBUG\n"},
			func(r *Run) any { return [3]any{r.DiskSize, r.DNS, r.KernelArgs} },
			[3]any{int64(10 << 30), []netip.Addr{netip.MustParseAddr("9.9.9.9"), netip.MustParseAddr("149.112.112.112")}, "DEBUG"}},
		{"bare disk_size is MiB", []string{minimal + "disk_size: 2048\n"},
			func(r *Run) any { return r.DiskSize }, int64(2 << 30)},
		{"empty second file changes nothing", []string{minimal, ""},
			func(r *Run) any { return r.ID }, "r1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := load(t, c.files...)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.get(r); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	long := strings.Repeat("a", 50)
	for _, c := range []struct {
		name  string
		files []string
		want  string
	}{
		{"filter", []string{`run_id: r1
repo: ghcr.io/o/kt
tag: main
machines:
  - {name: m0, kernel: kern, rootfs: root, arch: x86_64}
  - {name: m1, kernel: kern, rootfs: root, arch: x86_64}
  - {name: m2, kernel: kern, rootfs: root, arch: x86_64}
  - name: m3
    rootfs: r
    arch: x86_64

    kernel: "{{ repo | lower }}/k:{{ tag }}"
`}, `vars.yml:12: machines[3].kernel: filters are not supported: "{{ repo | lower }}"`},
		{"lookup", []string{minimal + "user: \"{{ lookup('env', 'USER') }}\"\n"},
			`vars.yml:4: user: lookups are not supported: "{{ lookup('env', 'USER') }}"`},
		{"expression", []string{minimal + "cpus: \"{{ n + 1 }}\"\n"},
			`vars.yml:4: cpus: expressions are not supported: "{{ n + 1 }}"`},
		{"attribute access", []string{minimal + "user: \"{{ repos.libs.name }}\"\n"},
			`vars.yml:4: user: expressions are not supported: "{{ repos.libs.name }}"`},
		{"statement", []string{minimal + "user: \"{% if x %}root{% endif %}\"\n"},
			`vars.yml:4: user: Jinja statements are not supported: "{% if x %}"`},
		{"comment", []string{minimal + "user: \"root{# who #}\"\n"},
			`vars.yml:4: user: Jinja comments are not supported: "{# who #}"`},
		{"unterminated", []string{minimal + "user: \"{{ name\"\n"},
			`vars.yml:4: user: unterminated template: "{{ name"`},
		{"empty template", []string{minimal + "user: \"x{{ }}\"\n"},
			`vars.yml:4: user: empty template: "{{ }}"`},
		{"undefined variable", []string{"run_id: r1\nmachines:\n  - {name: m, kernel: \"{{ repo }}/k\", rootfs: root, arch: x86_64}\n"},
			`vars.yml:3: machines[0].kernel: undefined variable "repo"`},
		{"undefined inside a referenced variable names that variable", []string{minimal, "ssh_key_path: \"{{ base }}/.ssh\"\n"},
			`local.yml:1: ssh_key_path: undefined variable "base"`},
		{"magic variables other than playbook_dir", []string{minimal + "user: \"{{ inventory_hostname }}\"\n"},
			`vars.yml:4: user: undefined variable "inventory_hostname"`},
		{"cycle through a default", []string{minimal + "ssh_key_path: \"{{ prv_key_path }}/..\"\n"},
			`vars.yml:4: ssh_key_path: template cycle: ssh_key_path -> prv_key_path -> ssh_key_path`},
		{"cycle", []string{minimal + "a: \"{{ b }}\"\nb: \"x{{ c }}\"\nc: \"{{ a }}\"\nuser: \"{{ b }}\"\n"},
			`vars.yml:5: b: template cycle: b -> c -> a -> b`},
		{"self reference across files", []string{minimal + "tag: main\nrepo: \"r/{{ tag }}\"\nmachines:\n  - {name: m, kernel: \"{{ repo }}\", rootfs: root, arch: x86_64}\n", "tag: \"{{ tag }}-x\"\n"},
			`local.yml:1: tag: template cycle: tag -> tag`},
		{"list inside a string", []string{minimal + "l: [a, b]\nuser: \"u-{{ l }}\"\n"},
			`vars.yml:5: user: "{{ l }}" is a list, which cannot be part of a string`},
		{"vault", []string{minimal + "user: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n"},
			`vars.yml:4: user: vault-encrypted values are not supported`},
		{"unknown tag", []string{minimal + "user: !env USER\n"},
			`vars.yml:4: user: unsupported YAML tag !env`},
		{"bad YAML", []string{"run_id: r1\nmachines: [\n  {name: m\n"},
			`vars.yml:2: did not find expected ',' or '}'`},
		{"bad YAML in the second file", []string{minimal, "a: b\n c: d\n"},
			`local.yml:2: mapping values are not allowed in this context`},
		{"two documents", []string{minimal + "---\nrun_id: r2\n"},
			`vars.yml:4: more than one YAML document`},
		{"top level not a mapping", []string{"- a\n- b\n"},
			`vars.yml:1: must be a mapping of variable names to values`},
		{"template error in an entry for another architecture", []string{minimal + "builders:\n  - {name: b, kernel: \"{{ nope }}\", rootfs: root, arch: aarch64}\n"},
			`vars.yml:5: builders[0].kernel: undefined variable "nope"`},
		{"memory in GB", []string{minimal + "memory: 2\n"},
			`vars.yml:4: memory: 2 MiB is too small: since kernel-testing v0.4.0 memory is in MiB (2 GB is 2048)`},
		{"memory 64", []string{minimal + "memory: 64\n"},
			`vars.yml:4: memory: 64 MiB is too small: since kernel-testing v0.4.0 memory is in MiB (64 GB is 65536)`},
		{"memory 0", []string{minimal + "memory: 0\n"},
			`vars.yml:4: memory: 0 MiB is too small: since kernel-testing v0.4.0 memory is in MiB (e.g. 2048)`},
		{"memory in GB through a template", []string{minimal + "memory: \"{{ gb }}\"\ngb: 4\n"},
			`vars.yml:4: memory: 4 MiB is too small: since kernel-testing v0.4.0 memory is in MiB (4 GB is 4096)`},
		{"memory with a unit", []string{minimal + "memory: 2G\n"},
			`vars.yml:4: memory: "2G" is not a whole number`},
		{"cpus 0", []string{minimal + "cpus: 0\n"},
			`vars.yml:4: cpus: must be at least 1, got 0`},
		{"cpus float", []string{minimal + "cpus: 2.5\n"},
			`vars.yml:4: cpus: "2.5" is not a whole number`},
		{"cpus bool", []string{minimal + "cpus: true\n"},
			`vars.yml:4: cpus: must be a number, not a boolean`},
		{"cpus empty", []string{minimal + "cpus:\n"},
			`vars.yml:4: cpus: must be a number, not empty`},
		{"cpus list", []string{minimal + "cpus: [1]\n"},
			`vars.yml:4: cpus: must be a number, not a list`},
		{"time_out 0", []string{minimal + "time_out: 0\n"},
			`vars.yml:4: time_out: must be at least 1 (seconds), got 0`},
		{"run_id missing", []string{"machines:\n  - {name: m, kernel: kern, rootfs: root, arch: x86_64}\n"},
			`run_id: not set in any vars file`},
		{"run_id empty", []string{minimal, "run_id: \"\"\n"},
			`local.yml:1: run_id: must not be empty`},
		{"run_id characters", []string{minimal, "run_id: id_12\n"},
			`local.yml:1: run_id: "id_12" may only contain letters, digits and "-" (it becomes part of Firecracker VM ids)`},
		{"user with a space", []string{minimal + "user: \"a b\"\n"},
			`vars.yml:4: user: "a b" contains whitespace or quotes, which inventory.ini cannot carry`},
		{"key path with a space", []string{minimal + "ssh_key_path: \"/my keys\"\n"},
			`built-in default: prv_key_path: "/my keys/firecracker_machines" contains whitespace or quotes, which inventory.ini cannot carry`},
		{"same key file twice", []string{minimal + "pub_key_path: \"{{ prv_key_path }}\"\n"},
			`vars.yml:4: pub_key_path: "/root/.ssh/firecracker_machines" is also prv_key_path`},
		{"machines missing", []string{"run_id: r1\n"},
			`machines: not set in any vars file`},
		{"machines not a list", []string{"run_id: r1\nmachines: {name: m}\n"},
			`vars.yml:2: machines: must be a list of {name, kernel, rootfs, arch}, not a mapping`},
		{"entry not a mapping", []string{"run_id: r1\nmachines:\n  - ubuntu-6.5\n"},
			`vars.yml:3: machines[0]: must be a mapping {name, kernel, rootfs, arch}, not a string`},
		{"missing kernel", []string{"run_id: r1\nmachines:\n  - {name: m, rootfs: root, arch: x86_64}\n"},
			`vars.yml:3: machines[0]: missing kernel`},
		{"missing arch", []string{"run_id: r1\nmachines:\n  - {name: m, kernel: kern, rootfs: root}\n"},
			`vars.yml:3: machines[0]: missing arch`},
		{"empty name", []string{"run_id: r1\nmachines:\n  - {name: \"\", kernel: kern, rootfs: root, arch: x86_64}\n"},
			`vars.yml:3: machines[0].name: must not be empty`},
		{"Go arch name", []string{"run_id: r1\nmachines:\n  - {name: m, kernel: kern, rootfs: root, arch: amd64}\n"},
			`vars.yml:3: machines[0].arch: "amd64" is not a uname -m name: use "x86_64"`},
		{"arch typo", []string{minimal + "builders:\n  - {name: b, kernel: kern, rootfs: root, arch: x86-64}\n"},
			`vars.yml:5: builders[0].arch: "x86-64" is not an architecture (uname -m: x86_64, aarch64, ...)`},
		{"name characters", []string{"run_id: r1\nmachines:\n  - {name: ubuntu_6.5, kernel: kern, rootfs: root, arch: x86_64}\n"},
			`vars.yml:3: machines[0].name: "ubuntu_6.5" may only contain letters, digits, "." and "-" (it becomes part of a Firecracker VM id)`},
		{"VM id too long", []string{"run_id: id-1234567890\nmachines:\n  - {name: " + long + ".x, kernel: kern, rootfs: root, arch: x86_64}\n"},
			`vars.yml:3: machines[0].name: VM id "` + long + `-x-id-1234567890" is 66 characters, Firecracker allows 64 (shorten run_id or the name)`},
		{"socket path too long", []string{"run_id: r\nmachines:\n  - {name: " + long + long + ", kernel: kern, rootfs: root, arch: x86_64}\n"},
			`vars.yml:3: machines[0].name: API socket "/tmp/r-` + long + long + `.sock" is 112 bytes, the limit is 107 (shorten run_id or the name)`},
		{"bad image ref", []string{"run_id: r1\nmachines:\n  - {name: m, kernel: \"UPPER/Case:tag\", rootfs: root, arch: x86_64}\n"},
			`vars.yml:3: machines[0].kernel: "UPPER/Case:tag" is not an image reference`},
		{"duplicate across machines and builders", []string{minimal, "builders:\n  - {name: b, kernel: kern, rootfs: root, arch: x86_64}\n  - {name: m1, kernel: kern, rootfs: root, arch: x86_64}\n"},
			`local.yml:3: builders[1].name: "m1" is also machines[0].name (vars.yml:3)`},
		{"duplicate within machines", []string{"run_id: r1\nmachines:\n  - {name: m, kernel: kern, rootfs: root, arch: x86_64}\n  - {name: m, kernel: kern2, rootfs: root2, arch: x86_64}\n"},
			`vars.yml:4: machines[1].name: "m" is also machines[0].name (vars.yml:3)`},
		{"names that become one VM id", []string{"run_id: r1\nmachines:\n  - {name: fedora-6.2, kernel: kern, rootfs: root, arch: x86_64}\n  - {name: fedora-6-2, kernel: kern, rootfs: root, arch: x86_64}\n"},
			`vars.yml:4: machines[1].name: "fedora-6-2" and machines[0].name "fedora-6.2" (vars.yml:3) both become VM id "fedora-6-2-r1"`},
		{"nothing for this arch", []string{"run_id: r1\nmachines:\n  - {name: m, kernel: kern, rootfs: root, arch: aarch64}\n"},
			`machines, builders: none of the 1 entries is for this host's architecture x86_64`},
		{"dns not IPv4", []string{minimal + "dns: 2606:4700::1111\n"},
			`vars.yml:4: dns: "2606:4700::1111" is not an IPv4 address`},
		{"dns list entry", []string{minimal + "dns:\n  - 1.1.1.1\n  - one\n"},
			`vars.yml:6: dns[1]: "one" is not an IPv4 address`},
		{"dns empty list", []string{minimal + "dns: []\n"},
			`vars.yml:4: dns: must name at least one IPv4 address`},
		{"disk_size", []string{minimal + "disk_size: 5 gigs\n"},
			`vars.yml:4: disk_size: "5 gigs": unknown unit "gigs" (use K, M, G or T)`},
		{"disk_size too small", []string{minimal + "disk_size: 512K\n"},
			`vars.yml:4: disk_size: "512K" is smaller than 1M`},
		{"kernel_args on two lines", []string{minimal + "kernel_args: \"a\\nb\"\n"},
			`vars.yml:4: kernel_args: must be one line`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := load(t, c.files...)
			if err == nil {
				t.Fatalf("no error, want %s", c.want)
			}
			if err.Error() != c.want {
				t.Errorf("error\n got %s\nwant %s", err, c.want)
			}
		})
	}
}

func TestLoadNoFiles(t *testing.T) {
	if _, err := Load(nil, LoadOptions{}); err == nil || err.Error() != "no vars files given" {
		t.Errorf("Load(nil) = %v, want \"no vars files given\"", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Chdir(t.TempDir())
	_, err := Load([]string{"no-such.yml"}, LoadOptions{HostArch: "x86_64"})
	if want := "vars file: open no-such.yml: no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("Load(missing) = %v, want %s", err, want)
	}
}

func TestLoadWarnsOnRepeatedKey(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.WriteFile("vars.yml", []byte(minimal+"c: &c {memory: 4096}\n<<: *c\nmemory: 8192\ncpus: 3\ncpus: 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r, err := Load([]string{"vars.yml"}, LoadOptions{PlaybookDir: "/pb", HostArch: "x86_64",
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{ReplaceAttr: dropTime}))})
	if err != nil {
		t.Fatal(err)
	}
	if r.CPUs != 4 || r.MemoryMiB != 8192 {
		t.Errorf("CPUs, MemoryMiB = %d, %d; want the last values 4, 8192", r.CPUs, r.MemoryMiB)
	}
	want := "level=WARN msg=\"vars file repeats a key; the last one wins\" file=vars.yml key=cpus line=8 first=7\n"
	if logs.String() != want {
		t.Errorf("log\n got %q\nwant %q", logs.String(), want)
	}
}

func dropTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
