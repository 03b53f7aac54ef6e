package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/kernel"
	"github.com/firegopher/firegopher/internal/kernel/kerneltest"
)

// tentry is one tar entry of a test layer.
type tentry struct {
	hdr  tar.Header
	body string
}

func dirE(name string, mode int64) tentry {
	return tentry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
}

func fileE(name, body string, mode int64) tentry {
	return tentry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, body: body}
}

func tarBytes(t *testing.T, entries []tentry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if hdr.ModTime.IsZero() {
			hdr.ModTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		}
		if len(hdr.PAXRecords) > 0 {
			hdr.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func layerOf(t *testing.T, entries []tentry) v1.Layer {
	t.Helper()
	b := tarBytes(t, entries)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// imageOf stacks layers on FROM scratch, for the host's platform.
func imageOf(t *testing.T, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	return imageFor(t, runtime.GOARCH, cfg, layers...)
}

func imageFor(t *testing.T, arch string, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", arch, cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

func pushImage(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
}

func newStore(t *testing.T) *assets.Store {
	t.Helper()
	s, err := assets.Open(filepath.Join(t.TempDir(), "cache"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func digestOf(b []byte) assets.Digest {
	h := sha256.Sum256(b)
	return assets.Digest("sha256:" + hex.EncodeToString(h[:]))
}

// assertNothingVisible checks a failed pull left no ref and nothing in tmp/.
func assertNothingVisible(t *testing.T, s *assets.Store) {
	t.Helper()
	es, err := List(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 0 {
		t.Errorf("refs after a failed pull: %+v", es)
	}
	tmp, err := os.ReadDir(filepath.Join(s.Root(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tmp {
		t.Errorf("left in tmp/: %s", e.Name())
	}
}

// describe lists a tree as path → "type mode uid:gid ..." lines for comparison.
func describe(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		perm := st.Mode & 0o7777
		var s string
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			s = fmt.Sprintf("dir %04o %d:%d", perm, st.Uid, st.Gid)
		case syscall.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s = fmt.Sprintf("file %04o %d:%d n%d %q", perm, st.Uid, st.Gid, st.Nlink, data)
		case syscall.S_IFLNK:
			target, _ := os.Readlink(p)
			s = fmt.Sprintf("symlink %d:%d -> %s", st.Uid, st.Gid, target)
		case syscall.S_IFCHR:
			s = fmt.Sprintf("char %04o %d:%d %d,%d", perm, st.Uid, st.Gid, unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case syscall.S_IFIFO:
			s = fmt.Sprintf("fifo %04o %d:%d", perm, st.Uid, st.Gid)
		default:
			s = fmt.Sprintf("mode %o", st.Mode)
		}
		buf := make([]byte, 256)
		if n, err := unix.Lgetxattr(p, "user.test", buf); err == nil {
			s += " user.test=" + string(buf[:n])
		}
		out[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(t *testing.T, got, want map[string]string) {
	t.Helper()
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if got[k] != want[k] {
			t.Errorf("%s:\n  got  %s\n  want %s", k, orNone(got[k]), orNone(want[k]))
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "(absent)"
	}
	return s
}

// debugfsOut runs one read-only debugfs request against an image.
func debugfsOut(t *testing.T, img, request string) (stdout, stderr string) {
	t.Helper()
	bin, err := exec.LookPath("debugfs")
	if err != nil {
		bin = "/usr/sbin/debugfs"
	}
	cmd := exec.Command(bin, "-R", request, img)
	cmd.Env = append(os.Environ(), "DEBUGFS_PAGER=__none__")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs -R %q: %v: %s", request, err, e.String())
	}
	return o.String(), e.String()
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Guest modules for tests: virtio_blk and its dependencies are modules, the rest of
// kernel.GuestModules built in.
var (
	modRing = kerneltest.Module("license=GPL", "depends=")
	modVirt = kerneltest.Module("depends=virtio_ring")
	modBlk  = kerneltest.Module("depends=virtio")
)

func builtinList(except ...string) string {
	var b strings.Builder
	for _, g := range kernel.GuestModules {
		if !slices.Contains(except, g) {
			fmt.Fprintf(&b, "kernel/drivers/%s.ko\n", g)
		}
	}
	return b.String()
}
