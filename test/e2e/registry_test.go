//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// startRegistry runs Debian's docker-registry (the CNCF distribution registry) on a free
// loopback port with storage in a temp dir, for the duration of the test.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry not found: install the Debian package docker-registry")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yml")
	os.WriteFile(config, []byte(fmt.Sprintf(`version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: %s}}
http: {addr: %s}
`, filepath.Join(dir, "data"), addr)), 0o644)
	cmd := exec.Command(bin, "serve", config)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry on %s did not come up: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return strings.Replace(addr, "127.0.0.1", "localhost", 1)
}

// TestPushPullBoot publishes the project's own kernel and image to a real registry in the
// seed's *-kernel / *-image layouts, pulls them into an empty cache and boots from them.
func TestPushPullBoot(t *testing.T) {
	reg := startRegistry(t)
	kernelRef := reg + "/firegopher/debian-kernel:6.1-x86_64"
	imageRef := reg + "/firegopher/base-image:bookworm"
	for _, push := range [][]string{{"kernel/default", kernelRef}, {"image/default", imageRef}} {
		if r := firegopher(t, "push", push[0], push[1]); r.code != 0 {
			t.Fatalf("push %s: %s", push[0], r)
		}
	}
	// A second state dir: everything the VM boots from must come from the registry.
	fresh := t.TempDir()
	cmd := exec.Command(filepath.Join(binDir, "firegopher"), "--state-dir", fresh, "run",
		"--kernel", kernelRef, "--image", imageRef, "--", "sh", "-c", "cat /etc/debian_version; uname -r")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("run from pulled assets: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "12.") || !strings.Contains(lines[1], "cloud-amd64") {
		t.Fatalf("unexpected guest output %q", out)
	}
	imgs := exec.Command(filepath.Join(binDir, "firegopher"), "--state-dir", fresh, "images")
	listing, _ := imgs.Output()
	for _, want := range []string{"debian-kernel-6.1-x86_64", "base-image-bookworm"} {
		if !strings.Contains(string(listing), want) {
			t.Errorf("images lacks %s:\n%s", want, listing)
		}
	}
	// Pulling again downloads nothing.
	again := exec.Command(filepath.Join(binDir, "firegopher"), "--state-dir", fresh, "pull", imageRef)
	msg, err := again.CombinedOutput()
	if err != nil || !strings.Contains(string(msg), "up to date") {
		t.Fatalf("second pull: %v %s", err, msg)
	}
}

// TestContainerImageDefaults boots an ordinary container image (busybox, built here and
// pushed to the registry): its layers are flattened into ext4 and its Env, Cmd and
// WorkingDir become the run's defaults, which the user's flags override.
func TestContainerImageDefaults(t *testing.T) {
	reg := startRegistry(t)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox not found: install the Debian package busybox-static")
	}
	bin, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, d := range []string{"bin/", "srv/", "etc/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))})
	tw.Write(bin)
	for _, l := range []string{"sh", "echo", "pwd", "cat"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + l, Typeflag: tar.TypeSymlink, Linkname: "busybox"})
	}
	tw.Close()
	lay, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, lay)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.Config.Env = []string{"PATH=/bin", "GREETING=hello"}
	cfg.Config.Cmd = []string{"sh", "-c", "echo $GREETING from $(pwd)"}
	cfg.Config.WorkingDir = "/srv"
	cfg.Architecture, cfg.OS = "amd64", "linux"
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	ref := reg + "/test/busybox:1"
	tag, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	if r := firegopher(t, "run", "--image", ref); r.code != 0 || string(r.stdout) != "hello from /srv\n" {
		t.Fatalf("the image's Cmd, Env and WorkingDir: %s", r)
	}
	if r := firegopher(t, "run", "--image", ref, "-e", "GREETING=hi", "-w", "/", "--", "sh", "-c", "echo $GREETING from $(pwd)"); r.code != 0 || string(r.stdout) != "hi from /\n" {
		t.Fatalf("flags override the image: %s", r)
	}
	firegopher(t, "rmi", "image/busybox-1")
}

// TestImageBuildToLayout publishes the base-image recipe to a local OCI layout that a
// fresh cache pulls back as an image.
func TestImageBuildToLayout(t *testing.T) {
	layout := filepath.Join(t.TempDir(), "layout")
	if r := firegopher(t, "image", "build", "oci:"+layout); r.code != 0 {
		t.Fatalf("image build: %s", r)
	}
	fresh := t.TempDir()
	out, err := exec.Command(filepath.Join(binDir, "firegopher"), "--state-dir", fresh, "pull", "--name", "base", "oci:"+layout).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "image/base") {
		t.Fatalf("pull from the layout: %v\n%s", err, out)
	}
}
