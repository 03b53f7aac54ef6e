//go:build linux

package guest

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/firegopher/firegopher/internal/vmconfig"
)

// SetRlimits applies limits to init; the workload inherits them.
func SetRlimits(limits []vmconfig.Rlimit) error {
	for _, l := range limits {
		res, ok := vmconfig.RlimitResources[l.Resource]
		if !ok {
			return fmt.Errorf("rlimit %q unknown", l.Resource)
		}
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: l.Soft, Max: l.Hard}); err != nil {
			return fmt.Errorf("rlimit %s=%d:%d: %w", l.Resource, l.Soft, l.Hard, err)
		}
	}
	return nil
}
