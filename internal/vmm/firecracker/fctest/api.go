//go:build linux

package fctest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// States of the microVM, as GET / names them.
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)

// Firecracker's fault messages for ordering errors (src/vmm/src/rpc_interface.rs).
const (
	msgPostBoot       = "The requested operation is not supported after starting the microVM."
	msgPreBoot        = "The requested operation is not supported before starting the microVM."
	msgNoKernel       = "Cannot start microvm without kernel configuration."
	msgLoadAfterSetup = "Loading a microVM snapshot not allowed after configuring boot-specific resources."
)

// maxCmdline is x86's COMMAND_LINE_SIZE less the NUL.
const maxCmdline = 2047

// Server is one fake Firecracker's API and the microVM it describes.
type Server struct {
	Profile Profile
	API     *API
	ID      string // --id
	// EnablePCI is --enable-pci (1.13+).
	EnablePCI bool

	// Started is closed by a successful InstanceStart or snapshot load; CtrlAltDel
	// receives SendCtrlAltDel.
	Started    chan struct{}
	CtrlAltDel chan struct{}
	// OnPause is called (under the server's lock) with true on Paused, false on Resumed.
	OnPause func(paused bool)

	mu      sync.Mutex
	log     io.Writer
	state   string
	boot    *bootSource
	machine machineConfig
	drives  []*drive
	nics    []*nic
	vsock   *vsockDev
	logger  *logTarget
	metrics *logTarget
	entropy bool
	// setup: a boot-specific resource was configured (snapshot load must come first).
	setup bool
	// restored is the guest a snapshot load brought back (nil: booted or not started);
	// resumed is closed when the microVM first runs after InstanceStart or a load.
	restored *guestParams
	resumed  chan struct{}
	// guest is what the running guest booted (or was restored) with: a snapshot's.
	guest *guestParams
	// loadFailed is closed when a snapshot load failed: the process then exits.
	loadFailed chan struct{}
}

type bootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
	kernel, initrd  *os.File
}

type machineConfig struct {
	VcpuCount       int    `json:"vcpu_count"`
	MemSizeMib      int    `json:"mem_size_mib"`
	Smt             bool   `json:"smt"`
	TrackDirtyPages bool   `json:"track_dirty_pages"`
	HugePages       string `json:"huge_pages,omitempty"`
}

type drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
	f            *os.File
}

type nic struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMac    string `json:"guest_mac,omitempty"`
	Mtu         int    `json:"mtu,omitempty"`
	tap         *os.File
}

type vsockDev struct {
	GuestCid int    `json:"guest_cid"`
	UdsPath  string `json:"uds_path"`
	ln       net.Listener
}

// NewServer returns a microVM that has not started, logging to log (Firecracker logs to
// stdout until PUT /logger).
func NewServer(p Profile, api *API, id string, log io.Writer) *Server {
	return &Server{
		Profile: p, API: api, ID: id, log: log, state: StateNotStarted,
		machine:    machineConfig{VcpuCount: 1, MemSizeMib: 128},
		Started:    make(chan struct{}),
		CtrlAltDel: make(chan struct{}, 1),
		resumed:    make(chan struct{}),
		loadFailed: make(chan struct{}),
	}
}

// Logf writes a log line the way Firecracker formats them: [id:thread] message.
func (s *Server) Logf(thread, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logf(thread, format, args...)
}

func (s *Server) logf(thread, format string, args ...any) {
	fmt.Fprintf(s.log, "[%s:%s] %s\n", s.ID, thread, fmt.Sprintf(format, args...))
}

// State is the microVM's state as GET / reports it.
func (s *Server) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// faultError is a 400 with Firecracker's fault_message.
type faultError string

func (e faultError) Error() string { return string(e) }

func faultf(format string, args ...any) error { return faultError(fmt.Sprintf(format, args...)) }

type handler func(s *Server, op Operation, body []byte) (any, error)

// handlers by operationId; an operation of the API description that is not here answers
// that the fake does not model it (never a silent success).
var handlers = map[string]handler{
	"describeInstance":               (*Server).describeInstance,
	"getFirecrackerVersion":          (*Server).getVersion,
	"getMachineConfiguration":        (*Server).getMachineConfig,
	"putMachineConfiguration":        (*Server).putMachineConfig,
	"patchMachineConfiguration":      (*Server).patchMachineConfig,
	"putGuestBootSource":             (*Server).putBootSource,
	"putGuestDriveByID":              (*Server).putDrive,
	"patchGuestDriveByID":            (*Server).patchDrive,
	"putGuestNetworkInterfaceByID":   (*Server).putNIC,
	"patchGuestNetworkInterfaceByID": (*Server).patchNIC,
	"putGuestVsock":                  (*Server).putVsock,
	"putLogger":                      (*Server).putLogger,
	"putMetrics":                     (*Server).putMetrics,
	"putEntropyDevice":               (*Server).putEntropy,
	"createSyncAction":               (*Server).action,
	"patchVm":                        (*Server).patchVM,
	"createSnapshot":                 (*Server).createSnapshot,
	"loadSnapshot":                   (*Server).loadSnapshot,
}

// preBootOnly and postBootOnly are the operations each state refuses. PUT /drives and
// /network-interfaces are pre-boot only before 1.16 and hotplug after (see putDrive).
var (
	preBootOnly = set("putGuestBootSource", "putMachineConfiguration", "patchMachineConfiguration",
		"putLogger", "putMetrics", "putGuestVsock", "putEntropyDevice", "putBalloon", "putMmdsConfig",
		"putCpuConfiguration", "putSerialDevice", "putMemoryHotplug", "loadSnapshot", "putGuestPmemByID")
	postBootOnly = set("patchGuestDriveByID", "patchGuestNetworkInterfaceByID", "patchVm",
		"createSnapshot", "patchBalloon", "patchBalloonStatsInterval", "describeBalloonStats",
		"patchMemoryHotplug", "patchGuestPmemByID")
	// bootSetup are the pre-boot resources after which a snapshot can no longer be loaded
	// (logger and metrics may precede a load).
	bootSetup = set("putGuestBootSource", "putMachineConfiguration", "patchMachineConfiguration",
		"putGuestDriveByID", "putGuestNetworkInterfaceByID", "putGuestVsock", "putEntropyDevice",
		"putBalloon", "putMmdsConfig", "putCpuConfiguration", "putGuestPmemByID")
)

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 51200)) // --http-api-max-payload-size default
	if err != nil {
		fault(w, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	method := strings.ToUpper(r.Method[:1]) + strings.ToLower(r.Method[1:])
	if len(bytes.TrimSpace(body)) > 0 {
		s.logf("fc_api", "The API server received a %s request on %q with body %q.", method, r.URL.Path, body)
	} else {
		s.logf("fc_api", "The API server received a %s request on %q.", method, r.URL.Path)
	}
	op, ok := s.API.Match(r.Method, r.URL.Path)
	if !ok {
		fault(w, fmt.Sprintf("Invalid request method and/or path: %s %s.", r.Method, r.URL.Path))
		return
	}
	if err := op.ValidateBody(body); err != nil {
		fault(w, err.Error())
		return
	}
	if err := s.checkState(op.ID, body); err != nil {
		fault(w, err.Error())
		return
	}
	h, ok := handlers[op.ID]
	if !ok {
		fault(w, fmt.Sprintf("fctest: %s (%s %s) is not modelled by the fake", op.ID, r.Method, r.URL.Path))
		return
	}
	resp, err := h(s, op, body)
	if err != nil {
		var fe faultError
		if !errors.As(err, &fe) {
			err = faultf("%v", err)
		}
		fault(w, err.Error())
		return
	}
	if bootSetup[op.ID] {
		s.setup = true
	}
	if resp == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func fault(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"fault_message": msg})
}

// checkState applies the ordering rules of the release.
func (s *Server) checkState(opID string, body []byte) error {
	started := s.state != StateNotStarted
	switch {
	case started && preBootOnly[opID]:
		return faultError(msgPostBoot)
	case !started && postBootOnly[opID]:
		return faultError(msgPreBoot)
	case opID == "loadSnapshot" && s.setup:
		return faultError(msgLoadAfterSetup)
	case started && (opID == "putGuestDriveByID" || opID == "putGuestNetworkInterfaceByID"):
		if !s.Profile.Hotplug() {
			return faultError(msgPostBoot)
		}
		if !s.EnablePCI {
			return faultf("Device hotplug requires PCI: this microVM was started without --enable-pci.")
		}
		return faultf("fctest: PCI hotplug is not modelled by the fake")
	}
	return nil
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return faultf("An error occurred when deserializing the json body of a request: %v", err)
	}
	return nil
}

func (s *Server) describeInstance(Operation, []byte) (any, error) {
	return map[string]string{"app_name": "Firecracker", "id": s.ID, "state": s.state, "vmm_version": s.Profile.Version}, nil
}

func (s *Server) getVersion(Operation, []byte) (any, error) {
	return map[string]string{"firecracker_version": s.Profile.Version}, nil
}

func (s *Server) getMachineConfig(Operation, []byte) (any, error) { return s.machine, nil }

func (s *Server) putMachineConfig(_ Operation, body []byte) (any, error) {
	m := machineConfig{}
	if err := decode(body, &m); err != nil {
		return nil, err
	}
	return nil, s.setMachine(m)
}

func (s *Server) patchMachineConfig(_ Operation, body []byte) (any, error) {
	m := s.machine
	if err := decode(body, &m); err != nil {
		return nil, err
	}
	return nil, s.setMachine(m)
}

func (s *Server) setMachine(m machineConfig) error {
	if m.MemSizeMib <= 0 {
		return faultf("The memory size (MiB) is invalid.")
	}
	if m.VcpuCount > 1 && m.VcpuCount%2 == 1 && m.Smt {
		return faultf("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
	}
	if m.HugePages == "2M" && m.MemSizeMib%2 != 0 {
		return faultf("Memory size (%d MiB) must be a multiple of the huge page size (2 MiB).", m.MemSizeMib)
	}
	s.machine = m
	return nil
}

func (s *Server) putBootSource(_ Operation, body []byte) (any, error) {
	var b bootSource
	if err := decode(body, &b); err != nil {
		return nil, err
	}
	if len(b.BootArgs) > maxCmdline {
		return nil, faultf("The kernel command line is invalid: %d bytes, at most %d.", len(b.BootArgs), maxCmdline)
	}
	k, err := os.Open(b.KernelImagePath)
	if err != nil {
		return nil, faultf("The kernel file cannot be opened: %v", osErr(err))
	}
	b.kernel = k
	if b.InitrdPath != "" {
		if b.initrd, err = os.Open(b.InitrdPath); err != nil {
			k.Close()
			return nil, faultf("The initrd file cannot be opened due to invalid path or invalid permissions. %v", osErr(err))
		}
	}
	if old := s.boot; old != nil {
		old.kernel.Close()
		if old.initrd != nil {
			old.initrd.Close()
		}
	}
	s.boot = &b
	return nil, nil
}

// osErr is how Rust prints an io::Error: "No such file or directory (os error 2)".
func osErr(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Sprintf("%s (os error %d)", strings.ToUpper(errno.Error()[:1])+errno.Error()[1:], int(errno))
	}
	return err.Error()
}

func (s *Server) putDrive(op Operation, body []byte) (any, error) {
	var d drive
	if err := decode(body, &d); err != nil {
		return nil, err
	}
	if id := op.Params["drive_id"]; id != d.DriveID {
		return nil, faultf("The id from the path [%s] does not match the id from the body [%s]!", id, d.DriveID)
	}
	if d.PathOnHost == "" {
		return nil, faultf("Unable to create the block device: path_on_host is required for a virtio block device")
	}
	i := s.driveIndex(d.DriveID)
	if d.IsRootDevice {
		for j, o := range s.drives {
			if o.IsRootDevice && j != i {
				return nil, faultf("A root block device already exists!")
			}
		}
	}
	flags := os.O_RDWR
	if d.IsReadOnly {
		flags = os.O_RDONLY
	}
	f, err := os.OpenFile(d.PathOnHost, flags, 0)
	if err != nil {
		return nil, faultf("Unable to create the block device: BackingFile(%s, %q)", osErr(err), d.PathOnHost)
	}
	d.f = f
	if i >= 0 {
		s.drives[i].f.Close()
		s.drives[i] = &d
	} else {
		s.drives = append(s.drives, &d)
	}
	return nil, nil
}

func (s *Server) driveIndex(id string) int {
	for i, d := range s.drives {
		if d.DriveID == id {
			return i
		}
	}
	return -1
}

func (s *Server) patchDrive(op Operation, body []byte) (any, error) {
	var p struct {
		DriveID    string `json:"drive_id"`
		PathOnHost string `json:"path_on_host"`
	}
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	i := s.driveIndex(op.Params["drive_id"])
	if i < 0 || p.DriveID != op.Params["drive_id"] {
		return nil, faultf("Invalid block device ID: %s", op.Params["drive_id"])
	}
	if p.PathOnHost != "" {
		flags := os.O_RDWR
		if s.drives[i].IsReadOnly {
			flags = os.O_RDONLY
		}
		f, err := os.OpenFile(p.PathOnHost, flags, 0)
		if err != nil {
			return nil, faultf("Unable to patch the block device: BackingFile(%s, %q)", osErr(err), p.PathOnHost)
		}
		s.drives[i].f.Close()
		s.drives[i].f, s.drives[i].PathOnHost = f, p.PathOnHost
	}
	return nil, nil
}

func (s *Server) putNIC(op Operation, body []byte) (any, error) {
	var n nic
	if err := decode(body, &n); err != nil {
		return nil, err
	}
	if id := op.Params["iface_id"]; id != n.IfaceID {
		return nil, faultf("The id from the path [%s] does not match the id from the body [%s]!", id, n.IfaceID)
	}
	if n.GuestMac != "" {
		if _, err := net.ParseMAC(n.GuestMac); err != nil {
			return nil, faultf("An error occurred when deserializing the json body of a request: invalid MAC address %q", n.GuestMac)
		}
	}
	for _, o := range s.nics {
		if o.IfaceID != n.IfaceID && o.HostDevName == n.HostDevName {
			return nil, faultf("Could not create the network device: the host device name %s is already in use.", n.HostDevName)
		}
	}
	tap, err := openTAP(n.HostDevName)
	if err != nil {
		return nil, faultf("Could not create the network device: Open tap device failed: %s. Invalid TUN/TAP Backend provided by %s. Check our documentation on setting up the network devices.", osErr(err), n.HostDevName)
	}
	n.tap = tap
	for i, o := range s.nics {
		if o.IfaceID == n.IfaceID {
			o.tap.Close()
			s.nics[i] = &n
			return nil, nil
		}
	}
	s.nics = append(s.nics, &n)
	return nil, nil
}

// openTAP attaches to an existing TAP as Firecracker does: /dev/net/tun, TUNSETIFF with
// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR. A missing interface is an error here even as root
// (where TUNSETIFF would create one): the fake must never add an interface to a namespace
// it was not given one in, and Firecracker in its jail is not root.
func openTAP(name string) (*os.File, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, unix.EINVAL
	}
	if _, err := net.InterfaceByName(name); err != nil {
		return nil, unix.ENODEV
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var req [unix.IFNAMSIZ + 64]byte
	copy(req[:], name)
	*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		unix.Close(fd)
		return nil, e
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

func (s *Server) patchNIC(op Operation, body []byte) (any, error) {
	for _, n := range s.nics {
		if n.IfaceID == op.Params["iface_id"] {
			return nil, nil // rate limiters only: nothing the fake models
		}
	}
	return nil, faultf("Invalid network interface ID: %s", op.Params["iface_id"])
}

func (s *Server) putVsock(_ Operation, body []byte) (any, error) {
	var v vsockDev
	if err := decode(body, &v); err != nil {
		return nil, err
	}
	// The muxer binds uds_path at PUT time, pre-boot (v1.16.1 muxer.rs:308-313).
	ln, err := net.Listen("unix", v.UdsPath)
	if err != nil {
		return nil, faultf("Cannot create backend for vsock device: UnixBind(%s)", osErr(err))
	}
	v.ln = ln
	if s.vsock != nil {
		s.vsock.ln.Close()
	}
	s.vsock = &v
	go s.serveHostConnects(ln)
	return nil, nil
}

// serveHostConnects answers host-initiated connections: "CONNECT <port>\n" succeeds only
// for a port a guest socket listens on, and the fake guest listens on none, so every
// connection is closed, as Firecracker does.
func (s *Server) serveHostConnects(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			line, _ := bufio.NewReader(io.LimitReader(c, 64)).ReadString('\n')
			s.Logf("fc_vmm", "vsock: host connection %q: no guest listener, closing", strings.TrimSpace(line))
		}()
	}
}

// logTarget is a log or metrics file or FIFO as Firecracker writes it: non-blocking, a
// line that does not fit is dropped (an os.File would wait in the runtime's poller).
type logTarget struct{ fd int }

func (t *logTarget) Write(p []byte) (int, error) {
	unix.Write(t.fd, p)
	return len(p), nil
}

// openLogTarget opens a log or metrics path the way the release does: 1.6 opens an
// existing file or FIFO O_RDWR|O_NONBLOCK, 1.16 also creates a missing one.
func (s *Server) openLogTarget(path string) (*logTarget, error) {
	flags := unix.O_RDWR | unix.O_NONBLOCK | unix.O_CLOEXEC
	if s.Profile.CreatesLogFiles() {
		flags |= unix.O_CREAT | unix.O_APPEND
	}
	fd, err := unix.Open(path, flags, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &logTarget{fd: fd}, nil
}

func (s *Server) putLogger(_ Operation, body []byte) (any, error) {
	var l struct {
		LogPath string `json:"log_path"`
	}
	if err := decode(body, &l); err != nil {
		return nil, err
	}
	if s.logger != nil {
		return nil, faultf("Logger: reinitialization of the logger is not allowed.")
	}
	if l.LogPath == "" {
		return nil, nil // level or filters only: stays on stdout
	}
	f, err := s.openLogTarget(l.LogPath)
	if err != nil {
		return nil, faultf("Cannot initialize the logger: failed to open %s: %s", l.LogPath, osErr(err))
	}
	s.logger, s.log = f, f
	return nil, nil
}

func (s *Server) putMetrics(_ Operation, body []byte) (any, error) {
	var m struct {
		MetricsPath string `json:"metrics_path"`
	}
	if err := decode(body, &m); err != nil {
		return nil, err
	}
	if s.metrics != nil {
		return nil, faultf("Metrics: reinitialization of the metrics system is not allowed.")
	}
	f, err := s.openLogTarget(m.MetricsPath)
	if err != nil {
		return nil, faultf("Cannot initialize the metrics system: failed to open %s: %s", m.MetricsPath, osErr(err))
	}
	s.metrics = f
	return nil, nil
}

func (s *Server) putEntropy(Operation, []byte) (any, error) {
	s.entropy = true
	return nil, nil
}

func (s *Server) action(_ Operation, body []byte) (any, error) {
	var a struct {
		ActionType string `json:"action_type"`
	}
	if err := decode(body, &a); err != nil {
		return nil, err
	}
	switch a.ActionType {
	case "InstanceStart":
		switch {
		case s.state != StateNotStarted:
			return nil, faultError(msgPostBoot)
		case s.boot == nil:
			return nil, faultError(msgNoKernel)
		}
		s.state = StateRunning
		s.guest = s.bootParams()
		s.logf("fc_vmm", "Successfully started microvm that was configured from one single json")
		close(s.Started)
		close(s.resumed)
	case "SendCtrlAltDel":
		if s.state == StateNotStarted {
			return nil, faultError(msgPreBoot)
		}
		select {
		case s.CtrlAltDel <- struct{}{}:
		default: // one is already on its way: the i8042 has one key buffer
		}
	case "FlushMetrics":
		if s.metrics == nil {
			return nil, faultf("The metrics system is not initialized.")
		}
		s.writeMetrics()
	}
	return nil, nil
}

// WriteMetrics writes one metrics line, as Firecracker does on FlushMetrics, every minute
// and when it stops (Vmm's drop, the signal handlers' exit_with_code); nothing before
// PUT /metrics. Periodic writes are not modelled: no test runs for a minute.
func (s *Server) WriteMetrics() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeMetrics()
}

func (s *Server) writeMetrics() {
	if s.metrics == nil {
		return
	}
	// One JSON object a line, as METRICS.write() serializes it (O_NONBLOCK: a full FIFO
	// drops the line, never blocks).
	b, _ := json.Marshal(map[string]any{
		"utc_timestamp_ms": time.Now().UnixMilli(),
		"api_server":       map[string]int{"process_startup_time_us": 0},
		"fctest":           map[string]string{"state": s.state, "version": s.Profile.Version},
	})
	s.metrics.Write(append(b, '\n'))
}

// bootParams is the machine InstanceStart boots.
func (s *Server) bootParams() *guestParams {
	p := &guestParams{
		BootArgs: s.boot.BootArgs, Kernel: s.boot.KernelImagePath, Initrd: s.boot.InitrdPath,
		VCPUs: s.machine.VcpuCount, MemMiB: s.machine.MemSizeMib,
		Devices: s.Profile.ACPI() || kernelTakesMMIOCmdline(s.boot.kernel, s.boot.InitrdPath),
	}
	for _, d := range s.guestDrives() {
		p.Drives = append(p.Drives, guestDrive{Path: d.PathOnHost, ReadOnly: d.IsReadOnly})
	}
	for _, n := range s.nics {
		p.NICs = append(p.NICs, n.HostDevName)
	}
	if s.vsock != nil {
		p.Vsock = s.vsock.UdsPath
	}
	return p
}

// guestDrives lists the drives in the order the guest sees them: the root drive first,
// then the others in PUT order (fc src/vmm/src/builder.rs attach_block_devices).
func (s *Server) guestDrives() []*drive {
	var out []*drive
	for _, d := range s.drives {
		if d.IsRootDevice {
			out = append(out, d)
		}
	}
	for _, d := range s.drives {
		if !d.IsRootDevice {
			out = append(out, d)
		}
	}
	return out
}
