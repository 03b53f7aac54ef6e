// Package guest holds the parts of firegopher-init, the guest's PID 1: mounts, module
// loading, device discovery, the control channel (chosen on the kernel command line), the
// stage-2 handoff, switch_root, the workload supervisor and the final reboot. Each part
// takes the paths it works on so that it can be tested against a fake root on the host.
//
// Session, the guest's side of the control protocol, is also what a fake guest runs as an
// ordinary process, so that host-side tests can drive the protocol without a VM.
package guest
