package vmconfig

// ControlParam is the kernel command-line parameter that tells init which transport its
// control channel uses: "virtio-serial:<port name>" or "vsock:<port>" (init connects to
// the host, CID 2). The backend sets it; without it init uses the virtio-serial port.
const ControlParam = "firegopher.control"

// DefaultVsockPort is the vsock port of the control channel on Firecracker.
const DefaultVsockPort = 1024
