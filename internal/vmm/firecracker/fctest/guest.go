//go:build linux

package fctest

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/guest"
	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm/fake"
)

// guestEnv carries guestParams to the guest process (the fake re-executed).
const guestEnv = "FCTEST_GUEST"

// RebootArg on the kernel command line makes the fake guest reboot as soon as it is up.
const RebootArg = "fctest.reboot"

// guestParams is the machine the guest boots on, as the VMM configured it.
type guestParams struct {
	BootArgs string       `json:"boot_args"`
	Kernel   string       `json:"kernel"`
	Initrd   string       `json:"initrd,omitempty"`
	Drives   []guestDrive `json:"drives,omitempty"` // in the guest's order (vda, vdb, ...)
	NICs     []string     `json:"nics,omitempty"`
	Vsock    string       `json:"vsock,omitempty"` // uds_path
	VCPUs    int          `json:"vcpus"`
	MemMiB   int          `json:"mem_mib"`
	// Devices: the guest kernel sees the virtio-mmio devices (ACPI, or the command line).
	Devices bool `json:"devices"`
	// Restored: the guest resumes from a snapshot instead of booting.
	Restored bool `json:"restored,omitempty"`
}

type guestDrive struct {
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only"`
}

// guestTimeout bounds the guest's wait for the host's control listener, as init's does.
const guestTimeout = 10 * time.Second

func say(format string, args ...any) {
	fmt.Printf("[    0.000000] fctest guest: "+format+"\n", args...)
}

// guestMain is the guest: a kernel that boots (or does not find its devices) and then
// init: ours when the initrd holds our config, else a foreign init that runs until
// Ctrl-Alt-Del. It returns as the guest reboots; the VMM then exits 0.
func guestMain(p guestParams) int {
	// Ctrl-Alt-Del reaches init as SIGINT (init turns C_A_D off); catch it from the start.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, guest.StopSignal)
	say("Linux booting with %d vCPUs, %d MiB, command line %q", p.VCPUs, p.MemMiB, p.BootArgs)
	if !p.Devices {
		say("no virtio devices: this Firecracker describes them only as virtio_mmio.device= on the command line, which this kernel cannot take")
		say("Kernel panic - not syncing: VFS: Unable to mount root fs")
		return 0 // panic=-1 reboots
	}
	for _, a := range strings.Fields(p.BootArgs) {
		if a == RebootArg {
			say("reboot: Restarting system")
			return 0
		}
	}
	if p.Initrd == "" {
		return foreignInit(stop)
	}
	if _, err := initrd.ReadFile(p.Initrd, vmconfig.Path); err != nil {
		// Our init without a config in its initrd is a snapshot template's: it greets
		// and parks, waiting for the config over the control channel.
		if !strings.Contains(p.BootArgs, vmconfig.ControlParam+"=") {
			return foreignInit(stop)
		}
	}
	return ourInit(p, stop)
}

func foreignInit(stop chan os.Signal) int {
	say("a foreign init is running; Ctrl-Alt-Del reboots")
	<-stop
	say("reboot: Restarting system")
	return 0
}

// ourInit is firegopher-init's part, as the fake backend's guest plays it.
func ourInit(p guestParams, stop chan os.Signal) int {
	ctl, err := guest.ParseControl(p.BootArgs)
	if err != nil {
		say("init: control channel: %v; rebooting", err)
		return 0
	}
	if ctl.Transport != vmconfig.ControlVsock {
		say("init: control channel %s: Firecracker has no virtio-serial; init gives up after its device timeout and reboots", ctl)
		return 0
	}
	if p.Vsock == "" {
		say("init: control channel %s: no vsock device; rebooting", ctl)
		return 0
	}
	// Guest-initiated: the guest connects to CID 2, Firecracker connects to <uds>_<port>.
	c, err := dialRetrying(fmt.Sprintf("%s_%d", p.Vsock, ctl.VsockPort), guestTimeout)
	if err != nil {
		say("init: control channel %s: %v; rebooting", ctl, err)
		return 0
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	var cfg *vmconfig.Config
	var cfgErr error
	_, noConfig := initrd.ReadFile(p.Initrd, vmconfig.Path)
	switch {
	case noConfig != nil:
		if cfg, cfgErr = parked(c, p); cfg == nil && cfgErr == nil {
			return 0
		}
	case p.Restored:
		say("init: restored from a snapshot taken after the config was read: the fake cannot model that guest; rebooting")
		return 0
	default:
		cfg, cfgErr = initrd.ReadConfig(p.Initrd)
	}
	if cfgErr == nil {
		cfgErr = mountRoot(p, cfg)
	}
	fake.PlayInit(c, cfg, cfgErr, log, stop)
	say("reboot: Restarting system")
	return 0
}

// parked is init without a config in its initrd, as internal/guest plays it: a template
// guest greets and waits for its config on the channel (it is saved meanwhile); a guest
// restored from it wakes up on a connection its VMM reset and so connects again (c is that
// new connection), takes its config, and becomes a machine of its own (new entropy and
// clock, which the fake can only report). It then greets the host on the new connection.
func parked(c net.Conn, p guestParams) (*vmconfig.Config, error) {
	if !p.Restored {
		if err := agent.NewConn(c).Send(agent.KindHello, agent.MainStream, nil); err != nil {
			say("init: greet the host: %v; rebooting", err)
			return nil, nil
		}
		say("init: no config in the initrd: waiting for it on the control channel")
	} else {
		say("init: restored from a snapshot: the control connection was reset, connected again")
	}
	f, err := agent.ReadFrame(c)
	if err != nil {
		say("init: control channel: %v; rebooting", err)
		return nil, nil
	}
	if f.Kind != agent.KindConfig {
		return nil, fmt.Errorf("control channel: got a %s frame, want the config", f.Kind)
	}
	cfg, err := vmconfig.Parse(f.Payload)
	if err != nil {
		return nil, err
	}
	if p.Restored && cfg.Fresh == nil {
		return nil, errors.New("restored guest: the config brings no fresh entropy and clock")
	}
	if cfg.Fresh != nil {
		say("init: a new machine: %d bytes of host entropy, clock set to %s", len(cfg.Fresh.Entropy), time.Unix(0, cfg.Fresh.UnixNano).UTC().Format(time.RFC3339))
	}
	return cfg, nil
}

func dialRetrying(sock string, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the host does not listen: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountRoot finds the root disk as init would (by position: Firecracker shows no serial)
// and opens it with the drive's mode. When the fake's own root has no shell (a jail) and
// the disk is a tar archive, the archive is unpacked into it: that is the fake's "mount".
func mountRoot(p guestParams, cfg *vmconfig.Config) error {
	if cfg.Root.Serial != "" {
		return fmt.Errorf("mount root: no disk has serial %q (Firecracker answers GET_ID with an id of its own)", cfg.Root.Serial)
	}
	if cfg.Root.Index < 0 || cfg.Root.Index >= len(p.Drives) {
		return fmt.Errorf("mount root: no disk at position %d (the guest has %d)", cfg.Root.Index, len(p.Drives))
	}
	d := p.Drives[cfg.Root.Index]
	flags := os.O_RDWR
	if d.ReadOnly {
		flags = os.O_RDONLY
	}
	f, err := os.OpenFile(d.Path, flags, 0)
	if err != nil {
		return fmt.Errorf("mount root: %w", err)
	}
	defer f.Close()
	if _, err := os.Stat("/bin/sh"); err == nil {
		return nil
	}
	if err := untar(f, "/"); err != nil {
		return fmt.Errorf("mount root: %w", err)
	}
	// The workload's stdin is /dev/null; a jail has no such node and the guest cannot
	// mknod one, an empty file reads the same.
	if _, err := os.Stat("/dev/null"); err != nil {
		if err := os.WriteFile("/dev/null", nil, 0o666); err != nil {
			return fmt.Errorf("mount root: /dev/null: %w", err)
		}
	}
	return nil
}

func untar(r io.Reader, dst string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("root disk: not a tar archive: %w", err)
		}
		name := filepath.Join(dst, path.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(name, 0o755); err != nil {
				return err
			}
		case tar.TypeSymlink:
			os.MkdirAll(filepath.Dir(name), 0o755)
			if err := os.Symlink(h.Linkname, name); err != nil {
				return err
			}
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(name), 0o755)
			f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
}

// kernelTakesMMIOCmdline is the fake's own reading of a guest kernel: its virtio_mmio
// module (as the initrd's modules.order lists it) declares the "device" parameter, or,
// without a module, vmlinux holds the built-in parameter's name.
func kernelTakesMMIOCmdline(kernel *os.File, initrdPath string) bool {
	if initrdPath != "" {
		if order, err := initrd.ReadFile(initrdPath, vmconfig.ModulesOrderPath); err == nil {
			for _, line := range strings.Split(string(order), "\n") {
				if path.Base(strings.TrimSpace(line)) != "virtio_mmio.ko" {
					continue
				}
				mod, err := initrd.ReadFile(initrdPath, strings.TrimSpace(line))
				if err != nil {
					return false
				}
				f, err := elf.NewFile(bytes.NewReader(mod))
				if err != nil || f.Section(".modinfo") == nil {
					return false
				}
				info, _ := f.Section(".modinfo").Data()
				return bytes.Contains(append([]byte{0}, info...), []byte("\x00parm=device:"))
			}
		}
	}
	data, err := io.ReadAll(io.NewSectionReader(kernel, 0, 1<<30))
	return err == nil && bytes.Contains(data, []byte("virtio_mmio.device\x00"))
}

func encodeParams(p guestParams) string {
	b, _ := json.Marshal(p)
	return string(b)
}
