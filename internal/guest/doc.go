// Package guest holds the parts of firegopher-init, the guest's PID 1: mounts, module
// loading, device discovery, switch_root, the workload supervisor and power-off. Each part
// takes the paths it works on so that it can be tested against a fake root on the host.
package guest
