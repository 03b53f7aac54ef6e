package taskservice

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/containerd/runtime/v2/shim"

	"github.com/firegopher/firegopher/internal/bundle"
	"github.com/firegopher/firegopher/internal/podnet"
)

// StartShim is the `start` action: it starts this binary as the shim server of the
// container's pod (or of the container alone), or finds the pod's running one, and
// returns the socket address containerd prints — plain text, which containerd 1.6, 1.7,
// 2.x and CRI-O all read. Its working directory is the bundle.
func (s *Service) StartShim(ctx context.Context, opts shim.StartOpts) (_ string, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	grouping, netns := opts.ID, ""
	if oci, err := bundle.Read(cwd); err == nil {
		if g := bundle.Group(oci); g != "" {
			grouping = g
		}
		netns = bundle.NetNSPath(oci)
	}
	address, err := shim.SocketAddress(ctx, opts.Address, grouping)
	if err != nil {
		return "", err
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			// The pod's shim runs already: this container joins it.
			if err := shim.WriteAddress("address", address); err != nil {
				return "", err
			}
			return address, nil
		}
		if err := shim.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("remove stale shim socket: %w", err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			shim.RemoveSocket(address)
		}
	}()
	if err := shim.WriteAddress("address", address); err != nil {
		return "", err
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	args := []string{"-namespace", ns, "-id", opts.ID, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = os.Environ()
	// Its own process group: containerd's signals to the start action do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = []*os.File{f} // fd 3: the socket it serves
	// A pod's shim lives in the pod's network namespace (the first container of a pod is
	// its sandbox, whose bundle names it): its VMs' TAPs are made there and their VMMs
	// open them there.
	start := cmd.Start
	if netns != "" {
		start = func() error { return podnet.StartIn(netns, cmd) }
	}
	if err := start(); err != nil {
		return "", err
	}
	go cmd.Wait()
	return address, nil
}

// Cleanup is the `delete` action containerd runs when the shim is gone (crashed, killed):
// it does what `firegopher gc` does for this state directory — kills the VMM the dead
// shim left, removes its VM's record, files and network — and removes the container's
// private root disk. Its working directory is the bundle.
func (s *Service) Cleanup(ctx context.Context) (*taskAPI.DeleteResponse, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	log := s.cfg.Log.With("bundle", cwd)
	if id, err := os.ReadFile(filepath.Join(cwd, vmIDFile)); err == nil {
		log = log.With("vm", strings.TrimSpace(string(id)))
	}
	report, err := s.cfg.Host.GC()
	for _, line := range report {
		log.Info("cleanup: " + line)
	}
	if err != nil {
		log.Warn("cleanup", "error", err)
	}
	if b, err := os.ReadFile(filepath.Join(cwd, diskIDFile)); err == nil {
		path := strings.TrimSpace(string(b))
		// Only a file of our own rootfs cache: the bundle is containerd's to write.
		if filepath.Dir(path) == filepath.Clean(s.cfg.Rootfs.Dir) {
			os.Remove(path)
		}
	}
	os.Remove(filepath.Join(cwd, vmIDFile))
	os.Remove(filepath.Join(cwd, diskIDFile))
	return &taskAPI.DeleteResponse{
		ExitedAt:   protobuf.ToTimestamp(time.Now()),
		ExitStatus: 128 + uint32(syscall.SIGKILL),
	}, nil
}
