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
	s := guest.NewSession(c, cfg, log)
	if err := s.Hello(); err != nil {
		return 1
	}
	s.Serve()
	if cfgErr != nil {
		s.Report(agent.Exit{Code: exitcode.FiregopherError, Error: "read config: " + cfgErr.Error()})
		return 0
	}
	if cfg.Mode == vmconfig.ModeSystem {
		c.Close() // the image's init took PID 1 over: the channel closes with ours
		<-stop
		return 0
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
	return 0
}
