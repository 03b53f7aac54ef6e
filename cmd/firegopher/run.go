package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/assets"
	"github.com/firegopher/firegopher/internal/assets/oci"
	"github.com/firegopher/firegopher/internal/exitcode"
	"github.com/firegopher/firegopher/internal/spec"
)

var errInterrupted = errors.New("interrupted")

func newRunCommand(g *globalFlags) *cobra.Command {
	var f spec.RunFlags
	var detach bool
	cmd := &cobra.Command{
		Use:   "run [flags] -- CMD [ARGS...]",
		Short: "Boot a microVM, run one command in it, and return its exit code",
		Example: `  firegopher run -- python3 -c 'print("hello from a microVM")'
  firegopher run --memory 1G --env GREETING=hi -- sh -c 'echo $GREETING'
  firegopher run -d --name web -- python3 -m http.server`,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.Cmd = args
			m, err := spec.ParseRun(f)
			if err != nil {
				return err
			}
			return run(cmd.Context(), g, m, detach)
		},
	}
	fl := cmd.Flags()
	fl.SetInterspersed(false) // everything after the command belongs to it
	fl.IntVar(&f.CPUs, "cpus", 1, "virtual CPUs")
	fl.StringVar(&f.Memory, "memory", "512M", "guest memory (K, M, G suffixes; bare number = MiB)")
	fl.StringVar(&f.Image, "image", "default", "root filesystem: a cached image name or an ext4 file")
	fl.StringVar(&f.Kernel, "kernel", "default", "kernel: a cached name, a registry reference, deb:PACKAGE, a vmlinux/bzImage file or a linux-image .deb")
	fl.StringArrayVarP(&f.Env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	fl.StringVarP(&f.WorkDir, "workdir", "w", "", "working directory in the guest")
	fl.StringVarP(&f.User, "user", "u", "", "run as NAME|UID[:GROUP|GID] from the image's /etc/passwd")
	fl.StringArrayVar(&f.Copy, "copy", nil, "put a host file in the guest: HOST_PATH:/GUEST/PATH[:MODE] (repeatable)")
	fl.StringArrayVar(&f.AuthorizedKeys, "authorized-key", nil, "add an SSH public key file to root's authorized_keys (repeatable)")
	fl.StringVar(&f.Name, "name", "", "a name for the VM (default: none; refer to it by id)")
	fl.BoolVarP(&detach, "detach", "d", false, "run in the background and print the VM id")
	fl.BoolVar(&f.System, "system", false, "boot the image's own init (/sbin/init, systemd) after our setup, instead of a command")
	fl.StringVar(&f.VMM, "vmm", os.Getenv("FIREGOPHER_VMM"), "VMM backend: qemu (default; env FIREGOPHER_VMM)")
	fl.StringVar(&f.Accel, "accel", os.Getenv("FIREGOPHER_ACCEL"), "QEMU accelerator: kvm or tcg (default: probe; env FIREGOPHER_ACCEL)")
	registerNetFlags(fl, &f.Net)
	return cmd
}

func run(ctx context.Context, g *globalFlags, m *spec.Machine, detach bool) error {
	log := g.logger()
	if m.Mode == spec.ModeApp && len(m.Process.Cmd) == 0 && (m.Image.Path != "" || m.Image.Name == "default") {
		return applyImageDefaults(&m.Process, nil) // no image config can supply one: say so before any work
	}
	h, err := g.host()
	if err != nil {
		return err
	}
	if _, err := h.Backend(m.VMM); err != nil {
		return err
	}
	initBin, err := findInit()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	store, err := h.Store()
	if err != nil {
		return err
	}
	kernelDigest, _, err := resolveKernel(ctx, store, m.Kernel, log)
	if err != nil {
		return interrupted(ctx, err)
	}
	rootfs, imageConfig, err := resolveImage(ctx, store, m.Image, log)
	if err != nil {
		return interrupted(ctx, err)
	}
	if m.Mode == spec.ModeApp {
		if err := applyImageDefaults(&m.Process, imageConfig); err != nil {
			return err
		}
	}
	m.Assets = &spec.Assets{Kernel: string(kernelDigest), Rootfs: rootfs, Init: initBin}
	created, err := h.Create(m, detach)
	if err != nil {
		return err
	}
	if detach {
		if err := created.StartDetached(g.superviseArgv(m.ID)); err != nil {
			return err
		}
		fmt.Println(m.ID)
		return nil
	}
	exit, err := created.Run(ctx, os.Stdout, os.Stderr)
	if err != nil {
		return interrupted(ctx, err)
	}
	if exit.Code == exitcode.FiregopherError && exit.Error != "" {
		// init itself failed (bad config, missing disk): say so, the workload never ran.
		return fmt.Errorf("guest init: %s", exit.Error)
	}
	return exitCode(exit.Code)
}

// interrupted maps any error after a Ctrl-C to errInterrupted.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errInterrupted
	}
	return err
}

func resolveKernel(ctx context.Context, store *assets.Store, ref spec.AssetRef, log *slog.Logger) (assets.Digest, *assets.Kernel, error) {
	switch {
	case ref.Path != "" && strings.HasSuffix(ref.Path, ".deb"):
		return store.ImportKernelDeb(ctx, ref.Path)
	case ref.Path != "":
		return store.ImportKernelFile(ref.Path)
	case ref.Name == "default":
		return store.DefaultKernel(ctx, log)
	case ref.Deb != "":
		return store.DebKernel(ctx, ref.Deb, ref.Deb, log)
	case ref.OCI != "":
		name, err := pullIfMissing(ctx, store, ref.OCI, oci.KindKernel, log)
		if err != nil {
			return "", nil, fmt.Errorf("--kernel: %w", err)
		}
		ref.Name = name
	}
	d, err := store.Resolve("kernel/" + ref.Name)
	if err != nil {
		return "", nil, fmt.Errorf("--kernel: %s: %w", ref.Name, err)
	}
	k, err := store.LoadKernel(d)
	return d, k, err
}

// resolveImage returns the root filesystem to clone and the image's run defaults.
func resolveImage(ctx context.Context, store *assets.Store, ref spec.AssetRef, log *slog.Logger) (string, *assets.ImageConfig, error) {
	switch {
	case ref.Path != "":
		return ref.Path, nil, nil
	case ref.Name == "default":
		_, im, err := store.DefaultImage(ctx, log)
		if err != nil {
			return "", nil, err
		}
		return store.Path(im.Rootfs), im.Config, nil
	case ref.OCI != "":
		name, err := pullIfMissing(ctx, store, ref.OCI, oci.KindImage, log)
		if err != nil {
			return "", nil, fmt.Errorf("--image: %w", err)
		}
		ref.Name = name
	}
	d, err := store.Resolve("image/" + ref.Name)
	if err != nil {
		return "", nil, fmt.Errorf("--image: %s: %w (firegopher pull REF, or firegopher prepare --name)", ref.Name, err)
	}
	im, err := store.LoadImage(d)
	if err != nil {
		return "", nil, err
	}
	return store.Path(im.Rootfs), im.Config, nil
}

// pullIfMissing returns the local name of ref, pulling it on first use.
func pullIfMissing(ctx context.Context, store *assets.Store, ref, kind string, log *slog.Logger) (string, error) {
	name, err := oci.LocalName(ref)
	if err != nil {
		return "", err
	}
	if _, err := store.Resolve(kind + "/" + name); err == nil {
		return name, nil
	}
	log.Info("pulling "+ref, "kind", kind)
	res, err := oci.Pull(ctx, store, ref, oci.Options{Name: name, Kind: kind, Progress: os.Stderr, Log: log, Insecure: insecureRegistry(ref)})
	if err != nil {
		return "", err
	}
	return res.Name, nil
}

// insecureRegistry allows plain HTTP for registries on loopback, like docker does.
func insecureRegistry(ref string) bool {
	host, _, _ := strings.Cut(ref, "/")
	return strings.HasPrefix(host, "localhost") || strings.HasPrefix(host, "127.")
}

// applyImageDefaults merges a container image's config under what the user gave, the way
// docker run does: the user's command replaces Cmd, Entrypoint stays in front; image Env
// comes first so the user's --env wins.
func applyImageDefaults(p *spec.Process, c *assets.ImageConfig) error {
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
		return errors.New("no command: usage: firegopher run [flags] -- CMD [ARGS...] (the image has no default command)")
	}
	return nil
}

// findInit locates firegopher-init: $FIREGOPHER_INIT, beside this binary, or the
// install location.
func findInit() (string, error) {
	candidates := []string{os.Getenv("FIREGOPHER_INIT")}
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), "firegopher-init"))
	}
	candidates = append(candidates, "/usr/local/lib/firegopher/firegopher-init")
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", errors.New("firegopher-init not found beside firegopher or in /usr/local/lib/firegopher: build it with `make` (set FIREGOPHER_INIT to point elsewhere)")
}
