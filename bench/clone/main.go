// Command clone times the three ways a VM gets its root disk — reflink (on an XFS loop file),
// a qcow2 overlay, a sparse copy — for an image as big as the default one and for a 5 GiB one
// with the same data, so that "constant time" is a measurement. Usage: clone -image FILE
// (root: it makes and removes an XFS loop filesystem for the reflink path).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/firegopher/firegopher/internal/disk"
)

func main() {
	image := flag.String("image", "", "a raw ext4 image (the cached default one)")
	n := flag.Int("n", 5, "runs per case (median)")
	flag.Parse()
	if err := run(*image, *n); err != nil {
		fmt.Fprintln(os.Stderr, "clone:", err)
		os.Exit(1)
	}
}

func run(image string, n int) error {
	work, err := os.MkdirTemp("", "bench-clone-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// The XFS filesystem for the reflink path: a loop file, mounted only for this bench.
	xfsFile, mnt := filepath.Join(work, "xfs.img"), filepath.Join(work, "xfs")
	os.Mkdir(mnt, 0o755)
	if err := sh("truncate", "-s", "12G", xfsFile); err != nil {
		return err
	}
	if err := sh("mkfs.xfs", "-q", "-m", "reflink=1", xfsFile); err != nil {
		return err
	}
	if err := sh("mount", "-o", "loop", xfsFile, mnt); err != nil {
		return err
	}
	defer sh("umount", mnt)
	sizes := map[string]string{}
	for _, dir := range []string{work, mnt} {
		small := filepath.Join(dir, "small.ext4")
		if err := copyFile(image, small); err != nil {
			return err
		}
		big := filepath.Join(dir, "big.ext4")
		if err := copyFile(image, big); err != nil {
			return err
		}
		if err := os.Truncate(big, 5<<30); err != nil { // the same data, a 5 GiB image
			return err
		}
		if dir == work {
			st, _ := os.Stat(small)
			sizes["small"] = fmt.Sprintf("%d MiB", st.Size()>>20)
		}
	}
	sizes["big"] = "5120 MiB"
	type clone func(src, dst string) error
	cases := []struct {
		name string
		dir  string
		fn   clone
	}{
		{"reflink (XFS)", mnt, disk.CloneReflink},
		{"qcow2 overlay", work, func(s, d string) error { return disk.MakeOverlay(context.Background(), s, d) }},
		{"sparse copy (ext4)", work, func(s, d string) error { _, err := disk.Clone(s, d); return err }},
	}
	fmt.Printf("## %s — %s image and a 5 GiB one with the same data, median of %d\n\n", time.Now().UTC().Format("2006-01-02"), sizes["small"], n)
	fmt.Println("| path | default image ms | 5 GiB image ms | ratio 5 GiB / default |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	for _, c := range cases {
		var med [2]float64
		for i, which := range []string{"small", "big"} {
			var ms []float64
			for r := 0; r < n; r++ {
				dst := filepath.Join(c.dir, fmt.Sprintf("clone-%d", r))
				start := time.Now()
				if err := c.fn(filepath.Join(c.dir, which+".ext4"), dst); err != nil {
					return fmt.Errorf("%s: %w", c.name, err)
				}
				ms = append(ms, float64(time.Since(start).Microseconds())/1000)
				os.Remove(dst)
			}
			sort.Float64s(ms)
			med[i] = ms[len(ms)/2]
		}
		fmt.Printf("| %s | %.1f | %.1f | %.2f |\n", c.name, med[0], med[1], med[1]/med[0])
	}
	fmt.Println()
	return nil
}

func copyFile(src, dst string) error {
	_, err := disk.Clone(src, dst)
	return err
}

func sh(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, out)
	}
	return nil
}
