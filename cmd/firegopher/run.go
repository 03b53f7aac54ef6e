package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/assets/resolve"
	"github.com/firegopher/firegopher/internal/console"
	"github.com/firegopher/firegopher/internal/exitcode"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/supervisor"
	"github.com/firegopher/firegopher/internal/vmm"
)

var errInterrupted = errors.New("interrupted")

func newRunCommand(g *globalFlags) *cobra.Command {
	var f spec.RunFlags
	var detach, tty, noSnapshot bool
	cmd := &cobra.Command{
		Use:   "run [flags] -- CMD [ARGS...]",
		Short: "Boot a microVM, run one command in it, and return its exit code",
		Example: `  firegopher run -- python3 -c 'print("hello from a microVM")'
  firegopher run --memory 1G --env GREETING=hi -- sh -c 'echo $GREETING'
  firegopher run -d --name web -- python3 -m http.server`,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.Cmd = args
			var terminal *console.Terminal
			if tty {
				var err error
				size := agent.Resize{Rows: 24, Cols: 80}
				if terminal, err = console.Open(os.Stdin); err == nil {
					size = terminal.Size()
				} else if !detach {
					return err // -d -t needs no terminal now: attach brings one
				}
				f.TTY, f.Term = &spec.Terminal{Rows: size.Rows, Cols: size.Cols}, os.Getenv("TERM")
			}
			m, err := spec.ParseRun(f)
			if err != nil {
				return err
			}
			if m.AutoStart && !detach {
				return errors.New("--autostart: needs -d: a foreground VM is removed when it ends, so nothing is left to start")
			}
			m.VMM.Snapshot = !noSnapshot
			return run(cmd.Context(), g, m, detach, terminal)
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
	fl.StringArrayVarP(&f.Volumes, "volume", "v", nil, "attach a volume: NAME:/GUEST/PATH[:ro] (firegopher volume create NAME), or a read-only copy of a host directory: ./DIR:/GUEST/PATH[:ro] (repeatable)")
	fl.StringArrayVar(&f.Copy, "copy", nil, "put a host file in the guest: HOST_PATH:/GUEST/PATH[:MODE] (repeatable)")
	fl.StringArrayVar(&f.AuthorizedKeys, "authorized-key", nil, "add an SSH public key file to root's authorized_keys (repeatable)")
	fl.StringVar(&f.Name, "name", "", "a name for the VM (default: none; refer to it by id)")
	fl.BoolVarP(&detach, "detach", "d", false, "run in the background and print the VM id")
	fl.BoolVarP(&f.Interactive, "interactive", "i", false, "keep the workload's stdin open to this terminal (or to `attach`)")
	fl.BoolVarP(&tty, "tty", "t", false, "give the workload a terminal (this one's size and TERM; raw mode while it runs)")
	fl.BoolVar(&f.System, "system", false, "boot the image's own init (/sbin/init, systemd) after our setup, instead of a command")
	fl.StringVar(&f.VMM, "vmm", os.Getenv("FIREGOPHER_VMM"), "VMM backend: firecracker or qemu (default: firecracker where KVM works and a release is installed, else qemu; env FIREGOPHER_VMM)")
	fl.StringVar(&f.Accel, "accel", os.Getenv("FIREGOPHER_ACCEL"), "QEMU accelerator: kvm or tcg (default: probe; env FIREGOPHER_ACCEL)")
	fl.BoolVar(&noSnapshot, "no-snapshot", os.Getenv("FIREGOPHER_NO_SNAPSHOT") == "1", "cold-boot instead of restoring from a snapshot template (QEMU/TCG app VMs restore from one by default; env FIREGOPHER_NO_SNAPSHOT=1)")
	registerNetFlags(fl, &f.Net)
	fl.StringArrayVarP(&f.Publish, "publish", "p", nil, "publish a port: [IP:]HOSTPORT:GUESTPORT[/tcp|/udp] (repeatable; implies --net)")
	fl.StringVar(&f.Service, "service", "", "the proxy service this VM serves (firegopher proxy serve routes SERVICE.DOMAIN to it)")
	fl.IntVar(&f.HTTPPort, "http-port", 0, "the guest port the proxy sends HTTP requests to (implies --net)")
	fl.BoolVar(&f.AutoStart, "autostart", false, "let the proxy start this VM again, once exited, for a request to its name or service (needs -d and --http-port)")
	fl.DurationVar(&f.AutoStop, "autostop", 0, "let the proxy stop this VM after this long without a request (e.g. 5m; needs --http-port)")
	return cmd
}

func run(ctx context.Context, g *globalFlags, m *spec.Machine, detach bool, terminal *console.Terminal) error {
	log := g.logger()
	if m.Mode == spec.ModeApp && len(m.Process.Cmd) == 0 && (m.Image.Path != "" || m.Image.Name == "default") {
		return resolve.ApplyImageDefaults(&m.Process, nil) // no image config can supply one: say so before any work
	}
	h, err := g.host()
	if err != nil {
		return err
	}
	// The default is chosen once, here, and recorded: a detached supervisor uses the same.
	m.VMM.Backend = backendName(h, m.VMM)
	backend, err := h.Backend(m.VMM)
	if err != nil {
		return err
	}
	// The VM starts on the backend checked here: building Firecracker's runs it (--version).
	build := h.Backend
	h.Backend = func(v spec.VMM) (vmm.Backend, error) {
		if v == m.VMM {
			return backend, nil
		}
		return build(v)
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
	res := &resolve.Resolver{Store: store, Log: log, Progress: os.Stderr}
	kernelDigest, _, err := res.Kernel(ctx, m.Kernel)
	if err != nil {
		return interrupted(ctx, err)
	}
	rootfs, imageConfig, err := res.Image(ctx, m.Image)
	if err != nil {
		return interrupted(ctx, err)
	}
	if m.Mode == spec.ModeApp {
		if err := resolve.ApplyImageDefaults(&m.Process, imageConfig); err != nil {
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
	stdio, restore, err := attachStdio(ctx, m.Process.Stdin, terminal)
	if err != nil {
		created.Discard()
		return err
	}
	exit, err := created.Run(ctx, stdio)
	restore()
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

// attachStdio is this terminal's side of a workload's stdio: stdin when asked, and with a
// terminal raw mode (undone by restore, which every path must call) and its resizes.
func attachStdio(ctx context.Context, stdin bool, terminal *console.Terminal) (supervisor.Stdio, func(), error) {
	stdio := supervisor.Stdio{Stdout: os.Stdout, Stderr: os.Stderr}
	if stdin {
		stdio.Stdin = os.Stdin
	}
	if terminal == nil {
		return stdio, func() {}, nil
	}
	restore, err := terminal.Raw()
	if err != nil {
		return stdio, nil, err
	}
	stdio.Resize = terminal.Resizes(ctx)
	return stdio, restore, nil
}
