//go:build linux

package fake

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/exitcode"
	"github.com/firegopher/firegopher/internal/guest"
	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// RunGuestIfRequested turns this process into a fake guest when the backend started it as
// one, and exits when the "VM" ends; otherwise it returns at once.
func RunGuestIfRequested() {
	if os.Getenv(GuestEnv) != "1" {
		return
	}
	fmt.Println("fake guest booted")
	os.Exit(runGuest(os.Getenv(controlEnv), os.Getenv(initrdEnv)))
}

// runGuest is init's session over the control socket, run as an ordinary process: the
// config's command runs on the host. Its exit is the VM's reboot.
func runGuest(sock, initrdPath string) int {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, guest.StopSignal) // Ctrl-Alt-Del, as init sees it
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Println("fake guest: control channel:", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	cfg, cfgErr := initrd.ReadConfig(initrdPath)
	if cfgErr != nil {
		cfgErr = fmt.Errorf("read config: %w", cfgErr)
	}
	PlayInit(c, cfg, cfgErr, log, stop)
	return 0
}

// PlayInit is what firegopher-init does over its control channel, played by an ordinary
// process: greet, run the config's workload (or report why it cannot), pass signals on,
// report the exit and wait for the host's ack. stop delivers Ctrl-Alt-Del (SIGINT). Test
// doubles of other VMMs (Firecracker's) play their guest with it too.
func PlayInit(c net.Conn, cfg *vmconfig.Config, cfgErr error, log *slog.Logger, stop <-chan os.Signal) {
	s := guest.NewSession(c, cfg, log)
	if err := s.Hello(); err != nil {
		return
	}
	s.Serve()
	if cfgErr != nil {
		s.Report(agent.Exit{Code: exitcode.FiregopherError, Error: cfgErr.Error()})
		return
	}
	if cfg.Mode == vmconfig.ModeSystem {
		c.Close() // the image's init took PID 1 over: the channel closes with ours
		<-stop
		return
	}
	go func() {
		for range stop {
			s.Stop()
		}
	}()
	fwd := make(chan os.Signal, 1)
	signal.Notify(fwd, guest.ForwardedSignals...)
	go func() {
		for sig := range fwd {
			s.Signal(sig.(unix.Signal))
		}
	}()
	s.Report(s.RunMain("/"))
}
