package spec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Volume is a disk a machine gets besides its root: a named volume (read-write unless
// ReadOnly) or a host directory, shipped as a read-only ext4 copy of its contents.
type Volume struct {
	// Source is a volume name, or the absolute path of a host directory.
	Source string `json:"source"`
	// Target is where the guest mounts it: an absolute, clean path.
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// FieldVolume is how `firegopher run` spells the volume flag.
const FieldVolume = "--volume"

// MaxVolumes bounds a machine's volumes (each is a virtio disk, a PCI slot on QEMU's q35).
const MaxVolumes = 16

// IsDir says whether the volume is a host directory rather than a named volume.
func (v Volume) IsDir() bool { return strings.HasPrefix(v.Source, "/") }

// guestOwned are guest paths init mounts its own filesystems on: a volume there would hide
// them.
var guestOwned = []string{"/proc", "/sys", "/dev"}

// ParseVolume reads docker's -v syntax: NAME:/GUEST/PATH[:ro|:rw] for a named volume,
// ./DIR:/GUEST/PATH[:ro] or /DIR:/GUEST/PATH[:ro] for a host directory (a source starting
// with '/' or '.' is a path). A host directory must exist; it is always read-only, because
// the guest gets a copy of its contents, not the directory.
func ParseVolume(s string) (Volume, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return Volume{}, fmt.Errorf("%s: %q, want NAME:/GUEST/PATH[:ro] or ./HOST/DIR:/GUEST/PATH[:ro]", FieldVolume, s)
	}
	v := Volume{Source: parts[0], Target: parts[1]}
	opt := ""
	if len(parts) == 3 {
		opt = parts[2]
		if opt != "ro" && opt != "rw" {
			return Volume{}, fmt.Errorf("%s: %q: option %q, want ro or rw", FieldVolume, s, opt)
		}
		v.ReadOnly = opt == "ro"
	}
	if strings.HasPrefix(v.Source, "/") || strings.HasPrefix(v.Source, ".") {
		if opt == "rw" {
			return Volume{}, fmt.Errorf("%s: %q: a host directory is shipped as a read-only copy of its contents, not shared: drop :rw, or use a named volume for data the guest writes", FieldVolume, s)
		}
		abs, err := filepath.Abs(v.Source)
		if err != nil {
			return Volume{}, fmt.Errorf("%s: %w", FieldVolume, err)
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return Volume{}, fmt.Errorf("%s: %s: no such directory", FieldVolume, v.Source)
		}
		if !fi.IsDir() {
			return Volume{}, fmt.Errorf("%s: %s: not a directory (--copy ships single files)", FieldVolume, v.Source)
		}
		v.Source, v.ReadOnly = abs, true
	} else if !namePattern.MatchString(v.Source) {
		return Volume{}, fmt.Errorf("%s: %q is neither a volume name (lowercase letters, digits, '.', '_', '-') nor a path (starting with / or .)", FieldVolume, v.Source)
	}
	if err := v.validateTarget(); err != nil {
		return Volume{}, err
	}
	return v, nil
}

// ParseVolumes parses each -v value and checks them together.
func ParseVolumes(specs []string) ([]Volume, error) {
	var vols []Volume
	for _, s := range specs {
		v, err := ParseVolume(s)
		if err != nil {
			return nil, err
		}
		vols = append(vols, v)
	}
	if err := validateVolumes(vols); err != nil {
		return nil, err
	}
	return vols, nil
}

func (v Volume) validateTarget() error {
	t := v.Target
	if !strings.HasPrefix(t, "/") {
		return fmt.Errorf("%s: guest path %q is not absolute", FieldVolume, t)
	}
	if filepath.Clean(t) != t || t == "/" {
		return fmt.Errorf("%s: guest path %q must be clean and not /", FieldVolume, t)
	}
	for _, own := range guestOwned {
		if t == own || strings.HasPrefix(t, own+"/") {
			return fmt.Errorf("%s: guest path %s: %s belongs to the guest's kernel filesystems", FieldVolume, t, own)
		}
	}
	return nil
}

// validateVolumes checks a machine's volumes as stored: each on its own, then together.
func validateVolumes(vols []Volume) error {
	if len(vols) > MaxVolumes {
		return fmt.Errorf("%s: %d volumes, at most %d", FieldVolume, len(vols), MaxVolumes)
	}
	targets, names := map[string]bool{}, map[string]bool{}
	for _, v := range vols {
		switch {
		case v.IsDir():
			if filepath.Clean(v.Source) != v.Source {
				return fmt.Errorf("%s: host directory %q is not a clean absolute path", FieldVolume, v.Source)
			}
			if !v.ReadOnly {
				return errors.New(FieldVolume + ": host directory " + v.Source + " must be read-only")
			}
		case !namePattern.MatchString(v.Source):
			return fmt.Errorf("%s: %q is not a volume name", FieldVolume, v.Source)
		case names[v.Source]:
			// Its lock is taken once per VM: a second attachment would wait on the first.
			return fmt.Errorf("%s: volume %s is attached twice", FieldVolume, v.Source)
		default:
			names[v.Source] = true
		}
		if err := v.validateTarget(); err != nil {
			return err
		}
		if targets[v.Target] {
			return fmt.Errorf("%s: two volumes on guest path %s", FieldVolume, v.Target)
		}
		targets[v.Target] = true
	}
	return nil
}
