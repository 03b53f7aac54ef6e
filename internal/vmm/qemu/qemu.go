// Package qemu runs VMs under qemu-system-x86_64: -M microvm with KVM where KVM really
// works, -M q35 with virtio-pci under TCG everywhere else (microvm hangs at boot under
// TCG unless the guest is told the TSC rate).
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/logtail"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
)

// Binary is the QEMU system emulator we drive.
const Binary = "qemu-system-x86_64"

// Files the backend keeps in the VM's directory while QEMU runs.
const (
	ControlSocket = "control.sock" // QEMU connects the guest's virtio-serial port here
	QMPSocket     = "qmp.sock"     // QEMU's machine protocol, for Ctrl-Alt-Del
	StderrSuffix  = ".qemu"        // QEMU's own complaints, beside the console log
)

// Accel is how QEMU executes guest code.
type Accel string

const (
	AccelTCG Accel = "tcg"
	AccelKVM Accel = "kvm"
)

// Backend is the QEMU VMM.
type Backend struct {
	Path  string // qemu-system-x86_64
	Accel Accel
	// tscArgs tell a TCG microvm guest the host's TSC rate (see tsc.go); measured on first
	// use when empty, since only microvm guests need it.
	tscArgs string
}

func (b *Backend) microvmTSC() string {
	if b.tscArgs == "" {
		// Only non-x86 hosts fail to measure; there is no TSC to tell about.
		b.tscArgs, _ = MicrovmTCGCmdline()
	}
	return b.tscArgs
}

// New finds QEMU and picks the accelerator: accel "" probes, "kvm"/"tcg" force one. A
// forced kvm on a host whose CPU shows no vmx/svm is refused at once: the guest would
// crawl and die of emulation failures instead.
func New(accel string) (*Backend, error) {
	path, err := exec.LookPath(Binary)
	if err != nil {
		return nil, fmt.Errorf("%s not found: install the Debian package qemu-system-x86", Binary)
	}
	b := &Backend{Path: path}
	switch accel {
	case "":
		b.Accel = ProbeAccel("/proc/cpuinfo", "/dev/kvm")
	case string(AccelTCG):
		b.Accel = AccelTCG
	case string(AccelKVM):
		if err := kvmUsable("/proc/cpuinfo", "/dev/kvm"); err != nil {
			return nil, fmt.Errorf("--accel kvm: %w", err)
		}
		b.Accel = AccelKVM
	default:
		return nil, fmt.Errorf("--accel: %q, want kvm, tcg or empty to probe", accel)
	}
	return b, nil
}

// ProbeAccel chooses KVM only when the CPU advertises hardware virtualisation and /dev/kvm
// answers. A PVM-based nested /dev/kvm (no vmx/svm flag) opens fine but dies with emulation
// failures on a stock kernel, so the flag is the deciding test.
func ProbeAccel(cpuinfo, kvmDev string) Accel {
	if kvmUsable(cpuinfo, kvmDev) != nil {
		return AccelTCG
	}
	return AccelKVM
}

// kvmUsable says why KVM cannot run stock guests here, or nil when it can.
func kvmUsable(cpuinfo, kvmDev string) error {
	data, err := os.ReadFile(cpuinfo)
	if err != nil {
		return err
	}
	hasVirt := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if f == "vmx" || f == "svm" {
				hasVirt = true
			}
		}
		break
	}
	if !hasVirt {
		return errors.New("the CPU shows no vmx or svm flag (no usable hardware virtualisation; use tcg)")
	}
	f, err := os.OpenFile(kvmDev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", kvmDev, err)
	}
	defer f.Close()
	// KVM_GET_API_VERSION: 12 on every kernel since 2.6.22.
	const kvmGetAPIVersion = 0xAE00
	if v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion); err != nil || v != 12 {
		return fmt.Errorf("%s does not answer KVM_GET_API_VERSION", kvmDev)
	}
	return nil
}

func (b *Backend) Name() string { return "qemu-" + string(b.Accel) }

// Caps: QEMU gives virtio disks the serial we ask for.
func (b *Backend) Caps() vmm.Caps { return vmm.Caps{DiskSerials: true, Overlays: true} }

// Cmdline is the kernel command line QEMU boots spec with: the caller's part, then the
// control transport init must open and reboot=k (a guest reboot ends QEMU: -no-reboot), and
// on a TCG microvm the host's TSC rate (without it the guest hangs at boot now and then).
func (b *Backend) Cmdline(spec vmm.Spec) string {
	parts := []string{spec.Cmdline, "reboot=k"}
	if spec.MMIO && b.Accel == AccelTCG {
		parts = append(parts, b.microvmTSC())
	}
	if !spec.NoControl {
		parts = append(parts, vmconfig.VirtioSerialControlArg(vmconfig.ControlPortName))
	}
	return strings.TrimSpace(strings.Join(parts, " "))
}

// Args is the QEMU command line for spec; exported for tests.
func (b *Backend) Args(spec vmm.Spec) []string {
	// microvm has no PCI bus: its devices are virtio-mmio ("-device" suffix), which is
	// also the transport of guests whose own initrd loads only virtio_mmio.
	machine, bus := "q35,accel=tcg", "pci"
	if b.Accel == AccelKVM || spec.MMIO {
		machine, bus = "microvm,accel="+string(b.Accel)+",acpi=on", "device"
	}
	// One TCG thread per vCPU. QEMU refuses -accel beside -machine accel=, so then the
	// machine names none.
	multiTCG := b.Accel == AccelTCG && spec.CPUs > 1
	if multiTCG {
		machine = strings.Replace(strings.Replace(machine, "accel=tcg,", "", 1), ",accel=tcg", "", 1)
	}
	args := []string{
		"-name", "firegopher-" + spec.ID,
		"-machine", machine,
		"-cpu", "max",
		"-smp", strconv.Itoa(spec.CPUs),
		"-m", strconv.Itoa(spec.MemoryMiB) + "M",
		"-nodefaults", "-no-user-config",
		"-display", "none", "-monitor", "none",
		"-qmp", "unix:" + escapeOpt(filepath.Join(spec.Dir, QMPSocket)) + ",server=on,wait=off",
		// The serial console on QEMU's stdout, into a capped log (the guest's output is
		// the guest's choice, and unbounded).
		"-serial", "stdio",
		// A guest reboot or panic ends the process: no reboots, no lingering VMs.
		"-no-reboot",
		"-kernel", spec.Kernel,
		"-append", b.Cmdline(spec),
		"-device", "virtio-rng-" + bus,
	}
	if bus == "device" {
		// microvm has no keyboard controller: without one a reboot=k guest polls for it
		// before it resets (1.5 s more), and Ctrl-Alt-Del (Shutdown) has nowhere to go.
		args = append(args, "-device", "i8042")
	}
	if multiTCG {
		args = append(args, "-accel", "tcg,thread=multi")
	}
	if spec.Initrd != "" {
		args = append(args, "-initrd", spec.Initrd)
	}
	for i, d := range spec.Disks {
		id := fmt.Sprintf("disk%d", i)
		format := "raw"
		if d.Format != "" {
			format = d.Format
		}
		drive := fmt.Sprintf("if=none,id=%s,file=%s,format=%s,cache=writeback", id, escapeOpt(d.Path), format)
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		dev := fmt.Sprintf("virtio-blk-%s,drive=%s", bus, id)
		if d.Serial != "" {
			dev += ",serial=" + d.Serial
		}
		args = append(args, "-drive", drive, "-device", dev)
	}
	for i, n := range spec.NICs {
		id := fmt.Sprintf("net%d", i)
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", id, n.TAP),
			"-device", fmt.Sprintf("virtio-net-%s,netdev=%s,mac=%s", bus, id, n.MAC))
	}
	if !spec.NoControl {
		args = append(args,
			"-device", "virtio-serial-"+bus+",id=vser0",
			// QEMU connects to the backend's socket as a client: it listens before QEMU starts.
			"-chardev", "socket,id=ctl,path="+escapeOpt(filepath.Join(spec.Dir, ControlSocket)),
			"-device", "virtserialport,bus=vser0.0,chardev=ctl,name="+vmconfig.ControlPortName,
		)
	}
	return args
}

// escapeOpt doubles commas, QEMU's option-value escape.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Start launches QEMU. Its stderr goes beside the console log so that QEMU's own
// complaints are kept with the VM.
func (b *Backend) Start(ctx context.Context, spec vmm.Spec) (vmm.Instance, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return b.start(spec, b.Args(spec))
}

// start runs QEMU with args for spec: its control listener, console log and stderr log.
func (b *Backend) start(spec vmm.Spec, args []string) (*instance, error) {
	var control net.Listener
	if !spec.NoControl {
		var err error
		if control, err = net.Listen("unix", filepath.Join(spec.Dir, ControlSocket)); err != nil {
			return nil, fmt.Errorf("qemu: control socket: %w", err)
		}
	}
	qmp := filepath.Join(spec.Dir, QMPSocket)
	inst := &instance{qmp: qmp, stderrPath: spec.ConsoleLog + StderrSuffix}
	stderr, err := os.OpenFile(inst.stderrPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err == nil {
		var console *vmm.CappedLog
		if console, err = vmm.CreateCappedLog(spec.ConsoleLog, vmm.ConsoleCap); err != nil {
			stderr.Close()
		} else {
			var proc *vmm.Process
			proc, err = vmm.StartProcessWith(spec, b.Path, args, stderr, vmm.ProcessOptions{Console: console})
			if err == nil {
				inst.Running = vmm.Run(proc, control, func() { console.Close(); os.Remove(qmp) })
				return inst, nil
			}
			console.Close()
		}
	}
	if control != nil {
		control.Close()
	}
	return nil, err
}

// instance is a running QEMU; the stderr log stays with the VM after it ends.
type instance struct {
	*vmm.Running
	qmp        string
	stderrPath string
}

func (i *instance) Wait() error {
	if err := i.Ended(); err != nil {
		msg, _ := os.ReadFile(i.stderrPath)
		if s := strings.TrimSpace(string(msg)); s != "" {
			return fmt.Errorf("qemu: %v: %s", err, strings.Join(logtail.Lines(s, 3), " | "))
		}
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}

// Shutdown presses Ctrl-Alt-Del on the guest's keyboard through QMP: our init (which turned
// the kernel's own Ctrl-Alt-Del handling off) stops its workload and reboots; systemd
// reboots. -no-reboot turns the reboot into QEMU's exit.
func (i *instance) Shutdown(ctx context.Context) error {
	if i.Proc.Exited() {
		return nil
	}
	if err := sendCtrlAltDel(ctx, i.qmp); err != nil && !i.Proc.Exited() {
		i.Proc.Kill()
		<-i.Proc.Done()
		return fmt.Errorf("qemu: Ctrl-Alt-Del: %w; killed", err)
	}
	return i.Proc.WaitOrKill(ctx)
}

// sendCtrlAltDel speaks just enough QMP: greeting, capabilities, one send-key.
func sendCtrlAltDel(ctx context.Context, sock string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	c.SetDeadline(deadline)
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes('\n'); err != nil { // {"QMP": {...}}
		return fmt.Errorf("QMP greeting: %w", err)
	}
	for _, cmd := range []string{
		`{"execute":"qmp_capabilities"}`,
		`{"execute":"send-key","arguments":{"keys":[{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},{"type":"qcode","data":"delete"}]}}`,
	} {
		if _, err := c.Write([]byte(cmd + "\n")); err != nil {
			return err
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return fmt.Errorf("QMP: %w", err)
			}
			if bytes.Contains(line, []byte(`"error"`)) {
				return fmt.Errorf("QMP: %s", bytes.TrimSpace(line))
			}
			if bytes.Contains(line, []byte(`"return"`)) {
				break
			}
			// {"event": ...} lines may come first.
		}
	}
	return nil
}
