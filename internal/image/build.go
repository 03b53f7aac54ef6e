package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Build bootstraps the recipe into a temp dir inside workDir, empties /var/lib/apt/lists/*, and
// writes an ext4 image at out (via MakeExt4). The temp tree is removed whatever happens; out must
// not exist, and on error it does not exist. Needs root (mmdebstrap --mode=root) and the network
// or a file:// mirror.
func Build(ctx context.Context, r Recipe, workDir, out string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := r.Validate(); err != nil {
		return err
	}
	if err := RequireTools("mmdebstrap", "mkfs.ext4"); err != nil {
		return err
	}
	// Checked now rather than by MakeExt4 a minute of bootstrapping later.
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("image: %s already exists", out)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("image: %w", err)
	}
	tmp, err := os.MkdirTemp(workDir, "rootfs-*")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer func() {
		// Only logged: a leftover temp dir is no reason to throw away a good image.
		if err := removeTree(tmp, log); err != nil {
			log.Error("could not remove the bootstrap tree", "dir", tmp, "error", err)
		}
	}()

	n := r.normalized()
	tree := filepath.Join(tmp, "tree")
	start := time.Now()
	if err := bootstrap(ctx, n, tree, log); err != nil {
		return err
	}
	log.Debug("bootstrapped", "recipe", n.Key(), "took", time.Since(start).Round(time.Second))
	// The lists are tens of MiB, stale by the time anyone boots the image, and apt-get
	// update fetches them again anyway.
	if err := emptyAptLists(tree); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	start = time.Now()
	if err := MakeExt4(ctx, tree, out, 0); err != nil {
		return err
	}
	log.Debug("ext4 image written", "path", out, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func bootstrap(ctx context.Context, r Recipe, tree string, log *slog.Logger) error {
	bin, err := lookTool("mmdebstrap")
	if err != nil {
		return RequireTools("mmdebstrap")
	}
	args := []string{
		"--mode=root", // we run as root; don't let "auto" pick something else
		"--variant=apt",
		"--format=directory",
		"--components=" + strings.Join(r.Components, ","),
	}
	if len(r.Packages) > 0 {
		args = append(args, "--include="+strings.Join(r.Packages, ","))
	}
	// The mirror is always given: without one, and stdin not a terminal, mmdebstrap reads
	// sources.list lines from stdin. Stdin stays nil, which exec connects to /dev/null.
	args = append(args, r.Suite, tree, r.Mirror)
	cmd := exec.CommandContext(ctx, bin, args...)
	lines := &lineLog{log: log, keep: 20}
	// apt's and dpkg's messages may come on either stream; one writer keeps them in order.
	cmd.Stdout, cmd.Stderr = lines, lines
	// SIGTERM, not SIGKILL, so mmdebstrap unmounts /proc, /sys and /dev from the tree itself.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	log.Debug("running mmdebstrap", "args", args)
	err = cmd.Run()
	lines.flush()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("mmdebstrap %s: %w", r.Suite, ctx.Err())
		}
		return fmt.Errorf("mmdebstrap %s from %s: %w; its last output:\n%s", r.Suite, r.Mirror, err, lines.tail())
	}
	return nil
}

// lineLog sends a command's output to the logger line by line and keeps the last few for errors.
type lineLog struct {
	log     *slog.Logger
	keep    int
	mu      sync.Mutex
	partial []byte
	last    []string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	// A line this long is not a progress message; don't let it grow without bound.
	if len(l.partial) > 64<<10 {
		l.line(string(l.partial))
		l.partial = nil
	}
	return len(p), nil
}

func (l *lineLog) line(s string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return
	}
	l.log.Debug("mmdebstrap", "line", s)
	l.last = append(l.last, s)
	if len(l.last) > l.keep {
		l.last = slices.Delete(l.last, 0, len(l.last)-l.keep)
	}
}

func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line(string(l.partial))
		l.partial = nil
	}
}

func (l *lineLog) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.last) == 0 {
		return "  (nothing)"
	}
	return "  " + strings.Join(l.last, "\n  ")
}

// emptyAptLists removes the package lists but keeps lists/partial, which apt expects
// (owned by _apt, mode 0700).
func emptyAptLists(tree string) error {
	dir := tree
	// Lstat each level: a symlink in this path would make us delete outside the tree.
	for _, c := range []string{"var", "lib", "apt", "lists"} {
		dir = filepath.Join(dir, c)
		fi, err := os.Lstat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if e.Name() == "partial" && e.IsDir() {
			sub, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			for _, s := range sub {
				if err := os.RemoveAll(filepath.Join(p, s.Name())); err != nil {
					return err
				}
			}
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}

// removeTree removes dir without ever crossing into another mount. mmdebstrap mounts /proc,
// rbinds /sys and may bind-mount /dev nodes inside the tree; if it was killed they can still be
// there, and os.RemoveAll would delete through them into the host (cgroups, bpffs pins, ...).
func removeTree(dir string, log *slog.Logger) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, m := range mounts {
		// Lazy, deepest first; a child already gone with its parent's detach is fine.
		err := unix.Unmount(m, unix.MNT_DETACH)
		log.Warn("unmounting what mmdebstrap left in its tree", "path", m, "error", err)
	}
	if mounts, err = mountsUnder(dir); err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("still mounted, left in place: %s", strings.Join(mounts, ", "))
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return err
	}
	return removeSameDev(dir, st.Dev)
}

// removeSameDev is os.RemoveAll that leaves anything on another device (a mount point) alone;
// the mountinfo check above may miss mounts made in another mount namespace.
func removeSameDev(path string, dev uint64) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if st.Dev != dev {
		return fmt.Errorf("%s is on another filesystem, left in place", path)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		var first error
		for _, e := range entries {
			// Keep going: remove all that can be, report the first problem.
			if err := removeSameDev(filepath.Join(path, e.Name()), dev); err != nil && first == nil {
				first = err
			}
		}
		if first != nil {
			return first
		}
	}
	return os.Remove(path)
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	// mountinfo shows resolved paths (TMPDIR may be reached through a symlink).
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, err
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == abs || strings.HasPrefix(mp, abs+"/") {
			mounts = append(mounts, mp)
		}
	}
	// Deepest first; a path listed twice is stacked mounts, and needs two unmounts.
	slices.SortStableFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	return mounts, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space, \011, \012, \134).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
