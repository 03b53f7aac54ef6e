//go:build linux

package guest

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// A vsock channel is a socket; a socketpair stands in for it. What stage 1 hands over must
// survive an exec into another program (this test binary again, as stage 2), which takes the
// same channel and config over from its environment alone.
func TestHandoffCrossesExec(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	guestEnd, hostEnd := os.NewFile(uintptr(pair[0]), "guest"), os.NewFile(uintptr(pair[1]), "host")
	defer hostEnd.Close()
	defer guestEnd.Close()
	h := Handoff{Control: guestEnd, Config: &vmconfig.Config{Version: vmconfig.Version, Mode: vmconfig.ModeApp,
		Hostname: "h", Root: vmconfig.Disk{Serial: "root", FSType: "ext4"}, Cmd: []string{"true"}},
		Start: 1500 * time.Millisecond, Stop: true}
	env, err := h.env()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHandoffStage2Helper$")
	cmd.Env = append(env, "GUEST_TEST_STAGE2=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("stage 2: %v\n%s", err, out)
	}
	guestEnd.Close() // the child's copy is closed too: EOF ends the read
	got, err := io.ReadAll(hostEnd)
	if want := "stage 2: hostname h, root serial root, start 1.5s, stop true, channel closed on exec true"; err != nil || string(got) != want {
		t.Fatalf("host read %q %v, want %q", got, err, want)
	}
}

// TestHandoffStage2Helper is stage 2 of TestHandoffCrossesExec.
func TestHandoffStage2Helper(t *testing.T) {
	if os.Getenv("GUEST_TEST_STAGE2") != "1" {
		t.Skip("helper of TestHandoffCrossesExec")
	}
	h, ok, err := TakeHandoff()
	if err != nil || !ok {
		t.Fatalf("take: %v %v", ok, err)
	}
	flags, err := unix.FcntlInt(h.Control.Fd(), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(h.Control, "stage 2: hostname %s, root serial %s, start %s, stop %v, channel closed on exec %v",
		h.Config.Hostname, h.Config.Root.Serial, h.Start, h.Stop, flags&unix.FD_CLOEXEC != 0)
}

func TestHandoffAbsentInStage1(t *testing.T) {
	if _, ok, err := takeHandoff(func(string) string { return "" }); ok || err != nil {
		t.Fatalf("ok %v err %v", ok, err)
	}
}
