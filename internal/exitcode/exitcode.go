// Package exitcode names the exit codes firegopher gives, on the host and in the guest. They
// follow docker run and the shell: the workload's own code passes through untouched.
package exitcode

const (
	// FiregopherError: firegopher itself failed (bad input, no VMM, the VM died unreported).
	FiregopherError = 125
	// CannotExecute: the command exists in the guest but is not executable.
	CannotExecute = 126
	// NotFound: the command does not exist in the guest.
	NotFound = 127
	// SignalBase + N: the workload was killed by signal N.
	SignalBase = 128
	// Interrupted: Ctrl-C on the host stopped the VM (SignalBase + SIGINT).
	Interrupted = SignalBase + 2
)

// Signaled is the exit code of a process killed by signal sig.
func Signaled(sig int) int { return SignalBase + sig }
