// Package resolve turns the kernel and image a user asked for (a spec.AssetRef: a local
// file, a cache name, a Debian package or a registry reference) into stored assets,
// fetching or building them on first use, and merges a container image's run defaults
// under the user's command.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/assets/oci"
	"github.com/firegopher/firegopher/internal/spec"
)

// Resolver resolves asset references against one store.
type Resolver struct {
	Store *assets.Store
	// Log gets first-use work (pulls, builds) at Info; nil discards.
	Log *slog.Logger
	// Progress gets per-layer pull progress; nil is quiet.
	Progress io.Writer
}

// kind is what differs between resolving a kernel and an image.
type kind struct {
	name  string // oci.KindKernel or oci.KindImage: also the first part of the store ref
	field string // the flag errors name
	hint  string // how to get a missing named asset
}

var (
	kernelKind = kind{oci.KindKernel, "--kernel", "firegopher pull REF, or deb:PACKAGE"}
	imageKind  = kind{oci.KindImage, "--image", "firegopher pull REF, or firegopher prepare --name"}
)

// Kernel returns the kernel ref names: a local vmlinux/bzImage or .deb file (imported),
// "default" or deb:PACKAGE (built from Debian's package on first use), a registry
// reference (pulled on first use) or the name of a cached kernel. Errors name --kernel.
func (r *Resolver) Kernel(ctx context.Context, ref spec.AssetRef) (assets.Digest, *assets.Kernel, error) {
	d, k, err := r.kernel(ctx, ref)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", kernelKind.field, err)
	}
	return d, k, nil
}

func (r *Resolver) kernel(ctx context.Context, ref spec.AssetRef) (assets.Digest, *assets.Kernel, error) {
	switch {
	case ref.Path != "" && strings.HasSuffix(ref.Path, ".deb"):
		return r.Store.ImportKernelDeb(ctx, ref.Path)
	case ref.Path != "":
		return r.Store.ImportKernelFile(ref.Path)
	case ref.Name == "default":
		return r.Store.DefaultKernel(ctx, r.log())
	case ref.Deb != "":
		return r.Store.DebKernel(ctx, ref.Deb, ref.Deb, r.log())
	}
	d, err := r.stored(ctx, kernelKind, ref)
	if err != nil {
		return "", nil, err
	}
	k, err := r.Store.LoadKernel(d)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", ref, err)
	}
	return d, k, nil
}

// Image returns the root filesystem to clone for ref and the image's run defaults (nil
// when it has none): a local file as it is, "default" (bootstrapped on first use), a
// registry reference (pulled on first use) or the name of a cached image. Errors name
// --image.
func (r *Resolver) Image(ctx context.Context, ref spec.AssetRef) (rootfs string, cfg *assets.ImageConfig, err error) {
	rootfs, cfg, err = r.image(ctx, ref)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", imageKind.field, err)
	}
	return rootfs, cfg, nil
}

func (r *Resolver) image(ctx context.Context, ref spec.AssetRef) (string, *assets.ImageConfig, error) {
	var im *assets.Image
	switch {
	case ref.Path != "":
		return ref.Path, nil, nil
	case ref.Deb != "":
		return "", nil, fmt.Errorf("deb:%s: a Debian package can only be a kernel", ref.Deb)
	case ref.Name == "default":
		var err error
		if _, im, err = r.Store.DefaultImage(ctx, r.log()); err != nil {
			return "", nil, err
		}
	default:
		d, err := r.stored(ctx, imageKind, ref)
		if err != nil {
			return "", nil, err
		}
		if im, err = r.Store.LoadImage(d); err != nil {
			return "", nil, fmt.Errorf("%s: %w", ref, err)
		}
	}
	return r.Store.Path(im.Rootfs), im.Config, nil
}

// stored returns the manifest digest of a cache name or registry reference of kind k,
// pulling a registry reference that is not in the cache yet.
func (r *Resolver) stored(ctx context.Context, k kind, ref spec.AssetRef) (assets.Digest, error) {
	name := ref.Name
	if ref.OCI != "" {
		var err error
		if name, err = r.pullIfMissing(ctx, k, ref.OCI); err != nil {
			return "", err
		}
	}
	if name == "" {
		return "", errors.New("empty reference")
	}
	d, err := r.Store.Resolve(k.name + "/" + name)
	if errors.Is(err, assets.ErrNotFound) {
		return "", fmt.Errorf("%s: %w (%s)", name, err, k.hint)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

// pullIfMissing returns the local name of the registry reference ref, pulling it on first
// use. What is in the cache is used as it is: `firegopher pull` updates it.
func (r *Resolver) pullIfMissing(ctx context.Context, k kind, ref string) (string, error) {
	name, err := oci.LocalName(ref)
	if err != nil {
		return "", err
	}
	if _, err := r.Store.Resolve(k.name + "/" + name); err == nil {
		return name, nil
	}
	r.log().Info("pulling "+ref, "kind", k.name)
	res, err := oci.Pull(ctx, r.Store, ref, oci.Options{Name: name, Kind: k.name, Progress: r.Progress, Log: r.Log})
	if err != nil {
		return "", err
	}
	return res.Name, nil
}

func (r *Resolver) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// ErrNoCommand is returned by ApplyImageDefaults when neither the user nor the image gives
// a command.
var ErrNoCommand = errors.New("no command: usage: firegopher run [flags] -- CMD [ARGS...] (the image has no default command)")

// ApplyImageDefaults merges a container image's config c (nil: none) under what the user
// gave in p, the way docker run does: the user's command replaces Cmd while Entrypoint
// stays in front; the image's Env comes first so the user's wins; WorkDir and User are
// taken only where the user left them empty. A process still without a command is
// ErrNoCommand.
func ApplyImageDefaults(p *spec.Process, c *assets.ImageConfig) error {
	if c != nil {
		if len(p.Cmd) == 0 {
			p.Cmd = c.Cmd
		}
		p.Cmd = append(append([]string(nil), c.Entrypoint...), p.Cmd...)
		p.Env = append(append([]string(nil), c.Env...), p.Env...)
		if p.WorkDir == "" {
			p.WorkDir = c.WorkingDir
		}
		if p.User == "" {
			p.User = c.User
		}
	}
	if len(p.Cmd) == 0 {
		return ErrNoCommand
	}
	return nil
}
