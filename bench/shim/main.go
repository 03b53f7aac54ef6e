// Command shim measures what the containerd shim adds to a VM's life: `ctr run --rm` of
// `true` through containerd and containerd-shim-firegopher-v1, against `firegopher run --
// true` of the same root disk (the one the shim built from the image), alternated in one
// run, medians, as a ratio (goal: at most 1.10). It starts its own containerd in a temp
// dir, as the e2e test does, and stops it. Usage: shim -bin DIR [-n 7]
// (root; DIR holds firegopher, firegopher-init and containerd-shim-firegopher-v1; after
// `firegopher prepare`).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/firegopher/firegopher/internal/testutil/busyboximage"
)

const (
	shimRuntime = "io.containerd.firegopher.v1"
	image       = "docker.io/firegopher/busybox:bench"
)

func main() {
	bin := flag.String("bin", "bin", "directory of the built binaries")
	n := flag.Int("n", 7, "runs of each (median)")
	flag.Parse()
	if err := run(*bin, *n); err != nil {
		fmt.Fprintln(os.Stderr, "shim bench:", err)
		os.Exit(1)
	}
}

func run(bin string, n int) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	shared := os.Getenv("FIREGOPHER_STATE_DIR")
	if shared == "" {
		shared = "/var/lib/firegopher"
	}
	dir, err := os.MkdirTemp("/tmp", "fgb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	state := filepath.Join(dir, "fg")
	os.MkdirAll(state, 0o755)
	if err := os.Symlink(filepath.Join(shared, "cache"), filepath.Join(state, "cache")); err != nil {
		return err
	}
	sock := filepath.Join(dir, "c.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return err
	}
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "FIREGOPHER_STATE_DIR="+state)
	var logBuf bytes.Buffer
	cd := exec.Command("containerd", "--config", cfg)
	cd.Env, cd.Stdout, cd.Stderr = env, &logBuf, &logBuf
	if err := cd.Start(); err != nil {
		return err
	}
	defer func() {
		cd.Process.Signal(syscall.SIGTERM)
		cd.Wait()
	}()
	ctr := func(args ...string) error {
		out, err := exec.Command("ctr", append([]string{"--address", sock}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	for deadline := time.Now().Add(30 * time.Second); ctr("version") != nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not answer:\n%s", logBuf.String())
		}
	}
	tarPath := filepath.Join(dir, "busybox.tar")
	if err := busyboximage.Write(tarPath, map[string]string{image: ""}); err != nil {
		return err
	}
	if err := ctr("image", "import", tarPath); err != nil {
		return err
	}
	// A first run builds the image's root disk: both sides then boot the same file.
	if err := ctr("run", "--rm", "--runtime", shimRuntime, image, "warmup", "true"); err != nil {
		return err
	}
	disks, _ := filepath.Glob(filepath.Join(state, "shim", "rootfs", "*.ext4"))
	if len(disks) != 1 {
		return fmt.Errorf("want the one cached root disk, have %v", disks)
	}
	var shimMs, fgMs []float64
	for i := 0; i < n; i++ {
		s := time.Now()
		if err := ctr("run", "--rm", "--runtime", shimRuntime, image, fmt.Sprintf("b%d", i), "true"); err != nil {
			return err
		}
		shimMs = append(shimMs, ms(time.Since(s)))
		s = time.Now()
		c := exec.Command(filepath.Join(bin, "firegopher"), "run", "--image", disks[0], "--", "true")
		c.Env = env
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("firegopher run: %v: %s", err, out)
		}
		fgMs = append(fgMs, ms(time.Since(s)))
	}
	sm, fm := median(shimMs), median(fgMs)
	fmt.Printf("## %s — `true`, median of %d, alternated\n\n", time.Now().UTC().Format("2006-01-02"), n)
	fmt.Println("| path | ms | ratio to `firegopher run` |")
	fmt.Println("| --- | ---: | ---: |")
	fmt.Printf("| `ctr run --rm --runtime %s` | %.0f | %.2f |\n", shimRuntime, sm, sm/fm)
	fmt.Printf("| `firegopher run --image DISK -- true` | %.0f | 1.00 |\n\n", fm)
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(xs []float64) float64 {
	sort.Float64s(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}
