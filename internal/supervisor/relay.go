package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/firegopher/firegopher/internal/agent"
	"github.com/firegopher/firegopher/internal/exitcode"
	"github.com/firegopher/firegopher/internal/logtail"
	"github.com/firegopher/firegopher/internal/spec"
)

// ErrNoExitStatus means the VM ended without init reporting how the workload ended.
var ErrNoExitStatus = errors.New("the VM stopped without reporting an exit status")

// endTimeout bounds how long a guest may take from reporting its exit to ending its VM (it
// reboots at once after the acknowledgement; this only catches a guest that hangs).
const endTimeout = 30 * time.Second

// request is a frame from an API client.
type request struct {
	client *agent.Conn
	frame  agent.Frame
}

// Stdio is a foreground run's terminal side: where the workload's output goes, where its
// stdin comes from (nil: none), and its terminal's size changes.
type Stdio struct {
	Stdout, Stderr io.Writer
	Stdin          io.Reader
	Resize         <-chan agent.Resize
}

// Relay runs the VM until it ends: guest output goes to the output log, to io's writers
// when given (a foreground run), and to attached clients; client requests (attach, stdin,
// resize, signal, exec, stop) are served. Cancelling ctx kills the VM. It returns the main
// workload's exit status.
func (vm *VM) Relay(ctx context.Context, io Stdio) (agent.Exit, error) {
	stdout, stderr := io.Stdout, io.Stderr
	logFile, err := os.OpenFile(vm.path(OutputLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return agent.Exit{}, err
	}
	defer logFile.Close()
	var logged int64

	frames := make(chan agent.Frame)
	var guestErr chan error // nil (never ready) for a guest without our init
	if vm.guest != nil {
		guestErr = make(chan error, 1)
		go vm.receive(frames, guestErr)
	}
	requests := make(chan request)
	go vm.serveAPI(requests)
	vmmExited := make(chan error, 1)
	go func() { vmmExited <- vm.instance.Wait() }()

	attached := map[*agent.Conn]bool{}
	execs := map[uint32]*agent.Conn{}  // exec stream → its client
	execOf := map[*agent.Conn]uint32{} // client → its exec stream: where its stdin goes
	// The main workload's stdin: pumped from io.Stdin in a foreground run, else written by
	// attached clients; the guest's windows go back to whoever writes it.
	var mainWindow *agent.Window
	var mainWriter *agent.Conn
	if io.Stdin != nil && vm.Machine.Process.Stdin && vm.guest != nil {
		mainWindow = agent.NewWindow()
		go agent.PumpStdin(ctx, io.Stdin, func(p []byte) error {
			return vm.guest.Send(agent.KindStdin, agent.MainStream, p)
		}, mainWindow)
	}
	nextStream := agent.MainStream + 1
	var stopTimer <-chan time.Time
	broadcast := func(f agent.Frame) {
		for c := range attached {
			if c.Send(f.Kind, f.Stream, f.Payload) != nil {
				delete(attached, c)
			}
		}
	}

	for {
		select {
		case f := <-frames:
			if f.Stream != agent.MainStream {
				if c := execs[f.Stream]; c != nil {
					c.Send(f.Kind, f.Stream, f.Payload)
					if f.Kind == agent.KindExit {
						delete(execs, f.Stream)
						delete(execOf, c)
					}
				}
				continue
			}
			switch f.Kind {
			case agent.KindWindow:
				if n, err := agent.WindowGrant(f.Payload); err == nil && mainWindow != nil {
					mainWindow.Grant(n)
				} else if mainWriter != nil {
					mainWriter.Send(f.Kind, f.Stream, f.Payload)
				}
			case agent.KindStdout, agent.KindStderr:
				n, _ := logFile.Write(f.Payload)
				logged += int64(n)
				if f.Kind == agent.KindStdout && stdout != nil {
					stdout.Write(f.Payload)
				} else if f.Kind == agent.KindStderr && stderr != nil {
					stderr.Write(f.Payload)
				}
				broadcast(f)
			case agent.KindHello:
				vm.Log.Debug("guest init is up")
			case agent.KindExit:
				var exit agent.Exit
				if err := f.Decode(&exit); err != nil {
					return agent.Exit{}, err
				}
				if err := vm.guest.Send(agent.KindAck, agent.MainStream, nil); err != nil {
					vm.Log.Warn("acknowledge exit status", "error", err)
				}
				vm.Log.Debug("workload exited", "code", exit.Code)
				err := vm.waitEnd(vmmExited)
				vm.Log.Debug("vmm exited")
				broadcast(f)
				return exit, err
			}
		case r := <-requests:
			switch r.frame.Kind {
			case agent.KindAttach:
				attached[r.client] = true
				r.client.SendJSON(agent.KindAttached, agent.MainStream, agent.Attached{LogOffset: logged})
			case agent.KindSignal, agent.KindExec:
				if vm.guest == nil || guestErr == nil {
					r.client.SendJSON(agent.KindExit, r.frame.Stream, agent.Exit{Code: exitcode.FiregopherError,
						Error: "this VM runs its own init: no firegopher channel to its processes (use ssh)"})
					continue
				}
				if r.frame.Kind == agent.KindSignal {
					stream := r.frame.Stream
					if s, isExec := execOf[r.client]; isExec {
						stream = s // an exec's client signals its exec (the shim's kill of an exec)
					}
					vm.guest.Send(agent.KindSignal, stream, r.frame.Payload)
					continue
				}
				stream := nextStream
				nextStream++
				execs[stream], execOf[r.client] = r.client, stream
				vm.guest.Send(agent.KindExec, stream, r.frame.Payload)
			case agent.KindStdin, agent.KindResize:
				if vm.guest == nil || guestErr == nil {
					continue
				}
				stream, isExec := execOf[r.client]
				if !isExec && r.frame.Kind == agent.KindStdin {
					mainWriter = r.client
				}
				vm.guest.Send(r.frame.Kind, stream, r.frame.Payload)
			case agent.KindStop:
				var s agent.Stop
				r.frame.Decode(&s)
				timeout := time.Duration(s.TimeoutSeconds) * time.Second
				if vm.Machine.Mode != spec.ModeApp {
					// The image's init owns the VM: ask it as a keyboard would, kill after timeout.
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), timeout)
						defer cancel()
						if err := vm.instance.Shutdown(ctx); err != nil {
							vm.Log.Info("system VM did not stop in time; killed", "error", err)
						}
					}()
				} else {
					vm.guest.Send(agent.KindSignal, agent.MainStream, []byte{byte(syscall.SIGTERM)})
					stopTimer = time.After(timeout)
				}
				r.client.Send(agent.KindAck, agent.MainStream, nil)
			}
		case r := <-io.Resize:
			if vm.guest != nil {
				vm.guest.SendJSON(agent.KindResize, agent.MainStream, r)
			}
		case <-stopTimer:
			vm.Log.Info("workload ignored SIGTERM; killing the VM")
			if err := vm.instance.Kill(); err != nil {
				vm.Log.Warn("kill VMM", "error", err)
			}
		case err := <-guestErr:
			if vm.Machine.Mode == spec.ModeSystem {
				// Our init handed PID 1 to the image's init; the channel closed with it. The
				// VM runs until it powers off.
				guestErr = nil
				continue
			}
			// The stream closes when the VMM exits; prefer the VMM's story.
			select {
			case vmErr := <-vmmExited:
				return agent.Exit{}, vm.diagnose(vmErr)
			case <-time.After(5 * time.Second):
				return agent.Exit{}, fmt.Errorf("control channel: %w", err)
			}
		case vmErr := <-vmmExited:
			if vm.Machine.Mode != spec.ModeApp && vmErr == nil {
				return agent.Exit{Code: 0}, nil // a VM under its own init that shut down
			}
			return agent.Exit{}, vm.diagnose(vmErr)
		case <-ctx.Done():
			return agent.Exit{}, ctx.Err()
		}
	}
}

// receive passes the guest's frames to the relay loop until the channel ends.
func (vm *VM) receive(frames chan<- agent.Frame, ended chan<- error) {
	for {
		f, err := vm.guest.Receive()
		if err != nil {
			ended <- err
			return
		}
		frames <- f
	}
}

// serveAPI accepts clients on the API socket and passes their frames to the relay loop.
func (vm *VM) serveAPI(requests chan<- request) {
	for {
		c, err := vm.api.Accept()
		if err != nil {
			return // closed by teardown
		}
		go func(c net.Conn) {
			defer c.Close()
			conn := agent.NewConn(c)
			for {
				f, err := conn.Receive()
				if err != nil {
					return
				}
				requests <- request{conn, f}
			}
		}(c)
	}
}

// waitEnd waits for the VMM to exit after the guest's last frame, bounded.
func (vm *VM) waitEnd(vmmExited <-chan error) error {
	select {
	case err := <-vmmExited:
		return err
	case <-time.After(endTimeout):
		vm.Log.Warn("guest did not end its VM; killing the VMM", "after", endTimeout)
		return vm.instance.Kill()
	}
}

// diagnose explains a VM that ended without an exit status, with the console's last lines.
func (vm *VM) diagnose(vmErr error) error {
	msg := ""
	if vmErr != nil {
		msg = ": " + vmErr.Error()
	}
	if tail := strings.Join(logtail.File(vm.path(ConsoleLog), 15), "\n"); tail != "" {
		msg += "\nlast lines of the console (" + vm.path(ConsoleLog) + "):\n" + tail
	}
	return fmt.Errorf("%w%s", ErrNoExitStatus, msg)
}
