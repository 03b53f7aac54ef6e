//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/firegopher/firegopher/internal/testutil/seed"
)

// The kernel-testing drop-in, end to end: a kernel image in their layout (the Debian
// kernel's vmlinux and a busybox initrd that behaves like theirs) and a rootfs container
// image with systemd, sshd and python3 go to a real registry; vars files in their style
// bring up two machines and a builder with `firegopher up`; real ansible-playbook runs
// their kind of plays against the written inventory; `down` leaves nothing. Everything
// networked (registry, VMs, TAPs, nft, DHCP, Ansible) lives in a namespace the test makes.

const pushHelperEnv = "FIREGOPHER_E2E_PUSH" // "LAYOUT=REF": this binary pushes, inside the namespace

// nsPush pushes img to ref from inside namespace ns (where the registry listens).
func nsPush(t *testing.T, ns string, img v1.Image, ref string) {
	t.Helper()
	dir := t.TempDir()
	if err := seed.WriteLayout(dir, img); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	cmd.Env = append(os.Environ(), pushHelperEnv+"="+dir+"="+ref)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("push %s: %v\n%s", ref, err, out)
	}
}

// nsRegistry runs Debian's docker-registry inside namespace ns on its loopback.
func nsRegistry(t *testing.T, ns string) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry not found: install the Debian package docker-registry")
	}
	dir := t.TempDir()
	const addr = "127.0.0.1:5000" // the namespace's own loopback: nothing else listens there
	config := filepath.Join(dir, "config.yml")
	os.WriteFile(config, []byte(fmt.Sprintf("version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n",
		filepath.Join(dir, "data"), addr)), 0o644)
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "serve", config)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for exec.Command("ip", "netns", "exec", ns, "curl", "-sf", "-m", "2", "http://"+addr+"/v2/").Run() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("registry in %s did not come up", ns)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "localhost:5000"
}

func seedKernelImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := seed.DefaultKernelImage(filepath.Join(stateDir, "cache"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func rootfsImage(t *testing.T) v1.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img, err := seed.RootfsImage(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return img
}

const upPlaybooks = `
- hosts: all
  remote_user: "{{ user }}"
  gather_facts: true
  tasks:
    - assert: {that: ["ansible_facts['architecture'] == 'x86_64'"]}
    - copy: {content: "{{ inventory_hostname }}\n", dest: /root/whoami}
- hosts: machines
  remote_user: "{{ user }}"
  gather_facts: false
  tasks:
    - ansible.posix.synchronize: {src: "{{ playbook_dir }}/repos/", dest: /root/repos/}
    - command: cat /root/repos/libs/README
      register: readme
    - assert: {that: ["readme.stdout == 'falcosecurity-libs'"]}
- hosts: debian-builder
  remote_user: "{{ user }}"
  gather_facts: false
  tasks:
    - command: uname -r
      register: kernel
    - debug: {var: kernel.stdout}
`

func TestUpAnsibleDown(t *testing.T) {
	for _, tool := range []string{"ansible-playbook", "mmdebstrap", "rsync", "ssh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run scripts/host-packages.sh", tool)
		}
	}
	n := newTestNet(t)
	reg := nsRegistry(t, n.host)
	repo := reg + "/falcosecurity/kernel-testing"
	nsPush(t, n.host, seedKernelImage(t), repo+"/debian-kernel:6.1-x86_64-main")
	nsPush(t, n.host, rootfsImage(t), repo+"/debian-image:12-x86_64-main")

	pb := filepath.Join(t.TempDir(), "ansible-playbooks")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(pb, "group_vars", "all"), 0o755))
	must(os.MkdirAll(filepath.Join(pb, "repos", "libs"), 0o755))
	must(os.WriteFile(filepath.Join(pb, "repos", "libs", "README"), []byte("falcosecurity-libs"), 0o644))
	keys := t.TempDir()
	// Their shipped file (tag main), trimmed to our images, plus one of another arch.
	must(os.WriteFile(filepath.Join(pb, "group_vars", "all", "vars.yml"), []byte(fmt.Sprintf(`---
time_out: 600
user: root
tag: main
repo: "%s"
machines:
  - {name: "debian-6.1", kernel: "{{ repo }}/debian-kernel:6.1-x86_64-{{ tag }}", rootfs: "{{ repo }}/debian-image:12-x86_64-{{ tag }}", arch: "x86_64"}
  - {name: "debian-6.1b", kernel: "{{ repo }}/debian-kernel:6.1-x86_64-{{ tag }}", rootfs: "{{ repo }}/debian-image:12-x86_64-{{ tag }}", arch: "x86_64"}
  - {name: "debian-6.1", kernel: "{{ repo }}/debian-kernel:6.1-aarch64-{{ tag }}", rootfs: "{{ repo }}/debian-image:12-aarch64-{{ tag }}", arch: "aarch64"}
builders:
  - {name: "debian-builder", kernel: "{{ repo }}/debian-kernel:6.1-x86_64-{{ tag }}", rootfs: "{{ repo }}/debian-image:12-x86_64-{{ tag }}", arch: "x86_64"}
output_dir: "~/ansible_output"
cpus: 1
memory: 512
run_id: "here-goes-the-id"
ssh_key_path: "/root/.ssh"
ssh_key_name: firecracker_machines
prv_key_path: "{{ ssh_key_path }}/{{ ssh_key_name }}"
pub_key_path: "{{ ssh_key_path }}/{{ ssh_key_name }}.pub"
runtime_root: "{{ playbook_dir }}/runtime"
`, repo)), 0o644))
	// Their action's override file: run id and the key dir (later file wins per key).
	override := filepath.Join(t.TempDir(), "vars.yml")
	must(os.WriteFile(override, []byte(fmt.Sprintf("run_id: \"id-e2e\"\nssh_key_path: %q\ntag: main\n", keys)), 0o644))
	must(os.WriteFile(filepath.Join(pb, "ansible.cfg"), []byte("[defaults]\ninventory = inventory.ini\nhost_key_checking = False\nbecome = False\n\n[ssh_connection]\nretries=10\n"), 0o644))
	must(os.WriteFile(filepath.Join(pb, "e2e.yml"), []byte(upPlaybooks), 0o644))
	vars := []string{"-f", filepath.Join(pb, "group_vars", "all", "vars.yml"), "-f", override}
	ns := []string{"ip", "netns", "exec", n.host}
	t.Cleanup(func() { runFiregopher(t, ns, append([]string{"down"}, vars...)...) })

	start := time.Now()
	r := runFiregopherFor(t, 15*time.Minute, ns, append([]string{"up"}, vars...)...)
	if r.code != 0 || !strings.Contains(string(r.stderr), "3 of 3 ready") {
		t.Fatalf("up: %s", r)
	}
	t.Logf("up: 3 machines SSH-ready in %s", time.Since(start).Round(time.Second))
	inv, err := os.ReadFile(filepath.Join(pb, "inventory.ini"))
	must(err)
	for _, want := range []string{"[machines]\ndebian-6.1 ansible_host=", "debian-6.1b ansible_host=", "[builders]\ndebian-builder ansible_host=",
		"ansible_ssh_private_key_file=" + filepath.Join(keys, "firecracker_machines") + " ansible_user=root\n"} {
		if !strings.Contains(string(inv), want) {
			t.Errorf("inventory lacks %q:\n%s", want, inv)
		}
	}
	// Idempotent: up again keeps what runs.
	if r := runFiregopherFor(t, 5*time.Minute, ns, append([]string{"up"}, vars...)...); r.code != 0 {
		t.Fatalf("second up: %s", r)
	}
	if r := runFiregopher(t, ns, "ssh", "id-e2e/debian-6.1", "--", "cat", "/etc/os-release"); r.code != 0 || !strings.Contains(string(r.stdout), "bookworm") {
		t.Fatalf("firegopher ssh (host keys pinned): %s", r)
	}

	// As their action runs it: group_vars/all/vars.yml implicitly, the override as extra vars.
	play := exec.Command("ip", "netns", "exec", n.host, "ansible-playbook", "e2e.yml", "-e", "@"+override)
	play.Dir = pb
	play.Env = append(os.Environ(), "ANSIBLE_FORCE_COLOR=0", "ANSIBLE_NOCOLOR=1")
	out, err := play.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "failed=0") {
		t.Fatalf("ansible-playbook: %v\n%s", err, out)
	}
	for _, host := range []string{"debian-6.1 ", "debian-6.1b ", "debian-builder "} {
		if !strings.Contains(string(out), host) {
			t.Errorf("the play did not reach %s:\n%s", host, out)
		}
	}

	if r := runFiregopher(t, ns, append([]string{"down"}, vars...)...); r.code != 0 {
		t.Fatalf("down: %s", r)
	}
	if r := runFiregopher(t, ns, "ps", "-a", "--run", "id-e2e"); strings.Count(string(r.stdout), "\n") != 1 {
		t.Fatalf("records left after down:\n%s", r)
	}
	links, _ := exec.Command("ip", "-n", n.host, "-o", "link").Output()
	if strings.Contains(string(links), "tap") {
		t.Fatalf("TAPs left after down:\n%s", links)
	}
}

// runFiregopherFor is runFiregopher with a longer bound (up boots several full OSes).
func runFiregopherFor(t *testing.T, d time.Duration, prefix []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	argv := append(append(append([]string(nil), prefix...), filepath.Join(binDir, "firegopher")), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "FIREGOPHER_STATE_DIR="+stateDir)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("firegopher %q did not finish in %s; stderr:\n%s", args, d, errOut.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("firegopher %q: %v", args, err)
	}
	return result{[]byte(out.String()), []byte(errOut.String()), code}
}
