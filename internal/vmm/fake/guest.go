//go:build linux

package fake

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/guest"
	"github.com/firegopher/firegopher/internal/initrd"
	"github.com/firegopher/firegopher/internal/vmconfig"
)

// ackTimeout matches init's bounded wait for the host's acknowledgement.
const ackTimeout = 10 * time.Second

// RunGuestIfRequested turns this process into a fake guest when the backend started it as
// one, and exits when the "VM" ends; otherwise it returns at once.
func RunGuestIfRequested() {
	if os.Getenv(GuestEnv) != "1" {
		return
	}
	fmt.Println("fake guest booted")
	os.Exit(runGuest(os.Getenv(controlEnv), os.Getenv(initrdEnv)))
}

func runGuest(sock, initrdPath string) int {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, unix.SIGINT) // Ctrl-Alt-Del, as init sees it
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Println("fake guest: control channel:", err)
		return 1
	}
	ctl := agent.NewConn(c)
	if err := ctl.Send(agent.KindHello, agent.MainStream, nil); err != nil {
		return 1
	}
	cfg, err := initrd.ReadConfig(initrdPath)
	if err != nil {
		report(ctl, agent.Exit{Code: 125, Error: "read config: " + err.Error()})
		return 0
	}
	if cfg.Mode == vmconfig.ModeSystem {
		c.Close() // the image's init took PID 1 over: the channel closes with ours
		<-stop
		return 0
	}
	s := &session{ctl: ctl, cfg: cfg, reaper: guest.NewReaper(), acked: make(chan struct{}),
		signals: map[uint32]chan unix.Signal{agent.MainStream: make(chan unix.Signal, 8)}}
	go s.readHost()
	go func() {
		for range stop {
			s.signal(agent.MainStream, unix.SIGTERM)
		}
	}()
	w := s.workload(agent.MainStream, cfg.Cmd, cfg.Env, cfg.WorkDir)
	report(ctl, w.Run())
	select {
	case <-s.acked:
	case <-time.After(ackTimeout):
		fmt.Println("fake guest: host did not acknowledge the exit status")
	}
	return 0
}

func report(ctl *agent.Conn, e agent.Exit) { ctl.SendJSON(agent.KindExit, agent.MainStream, e) }
