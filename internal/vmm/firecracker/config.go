package firecracker

import (
	"context"
	"fmt"
	"slices"

	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/operations"
	"github.com/go-openapi/strfmt"

	"github.com/firegopher/firegopher/internal/vmm"
)

// Config is every request body Start sends, built from a Spec with the SDK's models.
type Config struct {
	Machine *models.MachineConfiguration
	Boot    *models.BootSource
	Drives  []*models.Drive
	NICs    []*models.NetworkInterface
	Vsock   *models.Vsock
	// Entropy is the virtio-rng device (as QEMU's guests have one); nil for none.
	Entropy *models.EntropyDevice
	// Logger and Metrics name the FIFOs Firecracker writes its log and metrics to; nil
	// leaves the log on stdout (the console) and the metrics unwritten.
	Logger  *models.Logger
	Metrics *models.Metrics
}

// NewConfig builds and validates the API bodies for spec.
func NewConfig(spec vmm.Spec) (*Config, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	c := &Config{
		Machine: &models.MachineConfiguration{
			VcpuCount:  ptr(int64(spec.CPUs)),
			MemSizeMib: ptr(int64(spec.MemoryMiB)),
		},
		Boot: &models.BootSource{
			KernelImagePath: ptr(spec.Kernel),
			InitrdPath:      spec.Initrd,
			BootArgs:        spec.Cmdline,
		},
		Vsock: &models.Vsock{
			GuestCid: ptr(int64(VsockGuestCID)),
			UdsPath:  ptr(VsockPath(spec)),
		},
		Entropy: &models.EntropyDevice{},
		Logger:  &models.Logger{LogPath: ptr(LogFIFOPath(spec)), Level: ptr(models.LoggerLevelInfo)},
		Metrics: &models.Metrics{MetricsPath: ptr(MetricsFIFOPath(spec))},
	}
	seen := map[string]bool{}
	for i, d := range spec.Disks {
		// The guest never sees drive_id (GET_ID answers an id of Firecracker's own), so it
		// only has to be unique; drives attach in this order.
		id := d.Serial
		if id == "" {
			id = fmt.Sprintf("disk%d", i)
		}
		if err := checkID(id); err != nil {
			return nil, fmt.Errorf("vmm: disk %d id: %w", i, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("vmm: disk %d id %q: duplicate", i, id)
		}
		seen[id] = true
		c.Drives = append(c.Drives, &models.Drive{
			DriveID:      ptr(id),
			PathOnHost:   ptr(d.Path),
			IsRootDevice: ptr(false), // the initrd mounts the root itself
			IsReadOnly:   ptr(d.ReadOnly),
		})
	}
	for i, n := range spec.NICs {
		c.NICs = append(c.NICs, &models.NetworkInterface{
			IfaceID:     ptr(fmt.Sprintf("eth%d", i)),
			HostDevName: ptr(n.TAP),
			GuestMac:    n.MAC,
		})
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate runs the SDK's schema checks on every body.
func (c *Config) Validate() error {
	check := func(what string, v interface{ Validate(strfmt.Registry) error }) error {
		if err := v.Validate(strfmt.Default); err != nil {
			return fmt.Errorf("firecracker: %s: %w", what, err)
		}
		return nil
	}
	if c.Machine == nil || c.Boot == nil {
		return fmt.Errorf("firecracker: machine config and boot source are required")
	}
	if err := check("machine-config", c.Machine); err != nil {
		return err
	}
	if err := check("boot-source", c.Boot); err != nil {
		return err
	}
	for _, d := range c.Drives {
		if err := check("drive", d); err != nil {
			return err
		}
	}
	for _, n := range c.NICs {
		if err := check("network-interface", n); err != nil {
			return err
		}
	}
	if c.Vsock != nil {
		if err := check("vsock", c.Vsock); err != nil {
			return err
		}
	}
	if c.Logger != nil {
		if err := check("logger", c.Logger); err != nil {
			return err
		}
	}
	if c.Metrics != nil {
		if err := check("metrics", c.Metrics); err != nil {
			return err
		}
	}
	return nil
}

// checkID applies Firecracker's rule for resource ids in paths: 1-64 characters, ASCII
// letters, digits and '_' (anything else is rejected by its API server).
func checkID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%q: want 1 to 64 characters", id)
	}
	for _, r := range id {
		if r != '_' && !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return fmt.Errorf("%q: want only letters, digits and '_'", id)
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// Step is one named stage of configuring a VM over the API.
type Step struct {
	Name string
	Do   func(ctx context.Context, api operations.ClientIface, cfg *Config) error
}

// Steps run in order; like the SDK's Handlers they can be inspected and edited by name.
type Steps []Step

// Names of the default steps.
const (
	StepLogger            = "logger"
	StepMetrics           = "metrics"
	StepMachineConfig     = "machine-config"
	StepBootSource        = "boot-source"
	StepDrives            = "drives"
	StepNetworkInterfaces = "network-interfaces"
	StepVsock             = "vsock"
	StepEntropy           = "entropy"
	StepInstanceStart     = "instance-start"
)

// DefaultSteps is Start's sequence: logger first (it then records every later request
// and error), metrics, machine config, boot source, drives, NICs, vsock, entropy, boot.
func DefaultSteps() Steps {
	return Steps{
		{StepLogger, putLogger},
		{StepMetrics, putMetrics},
		{StepMachineConfig, putMachineConfig},
		{StepBootSource, putBootSource},
		{StepDrives, putDrives},
		{StepNetworkInterfaces, putNICs},
		{StepVsock, putVsock},
		{StepEntropy, putEntropy},
		{StepInstanceStart, instanceStart},
	}
}

// Names lists the steps in order.
func (s Steps) Names() []string {
	names := make([]string, len(s))
	for i, st := range s {
		names[i] = st.Name
	}
	return names
}

func (s Steps) index(name string) int {
	return slices.IndexFunc(s, func(st Step) bool { return st.Name == name })
}

// InsertBefore returns s with st before the step called name, or at the end if there is none.
func (s Steps) InsertBefore(name string, st Step) Steps {
	i := s.index(name)
	if i < 0 {
		i = len(s)
	}
	return slices.Insert(slices.Clone(s), i, st)
}

// InsertAfter returns s with st after the step called name, or at the end if there is none.
func (s Steps) InsertAfter(name string, st Step) Steps {
	i := s.index(name)
	if i < 0 {
		return append(slices.Clone(s), st)
	}
	return slices.Insert(slices.Clone(s), i+1, st)
}

// Replace returns s with the step called st.Name swapped for st; s unchanged if absent.
func (s Steps) Replace(st Step) Steps {
	out := slices.Clone(s)
	if i := out.index(st.Name); i >= 0 {
		out[i] = st
	}
	return out
}

// Remove returns s without the step called name.
func (s Steps) Remove(name string) Steps {
	return slices.DeleteFunc(slices.Clone(s), func(st Step) bool { return st.Name == name })
}

// validated checks a body just before it is sent: a custom step may have changed Config.
func validated(v interface{ Validate(strfmt.Registry) error }) error {
	return v.Validate(strfmt.Default)
}

func putLogger(ctx context.Context, api operations.ClientIface, cfg *Config) error {
	if cfg.Logger == nil {
		return nil
	}
	if err := validated(cfg.Logger); err != nil {
		return err
	}
	p := operations.NewPutLoggerParamsWithContext(ctx).WithTimeout(requestTimeout).WithBody(cfg.Logger)
	_, err := api.PutLogger(p)
	return apiError(err)
}

func putMetrics(ctx context.Context, api operations.ClientIface, cfg *Config) error {
	if cfg.Metrics == nil {
		return nil
	}
	if err := validated(cfg.Metrics); err != nil {
		return err
	}
	p := operations.NewPutMetricsParamsWithContext(ctx).WithTimeout(requestTimeout).WithBody(cfg.Metrics)
	_, err := api.PutMetrics(p)
	return apiError(err)
}

func putMachineConfig(ctx context.Context, api operations.ClientIface, cfg *Config) error {
	if err := validated(cfg.Machine); err != nil {
		return err
	}
	p := operations.NewPutMachineConfigurationParamsWithContext(ctx).WithTimeout(requestTimeout).WithBody(cfg.Machine)
	_, err := api.PutMachineConfiguration(p)
	return apiError(err)
}

func putBootSource(ctx context.Context, api operations.ClientIface, cfg *Config) error {
	if err := validated(cfg.Boot); err != nil {
		return err
	}
	p := operations.NewPutGuestBootSourceParamsWithContext(ctx).WithTimeout(requestTimeout).WithBody(cfg.Boot)
	_, err := api.PutGuestBootSource(p)
	return apiError(err)
}

func putDrives(ctx context.Context, api operations.ClientIface, cfg *Config) error {
	for _, d := range cfg.Drives {
		if err := validated(d); err != nil {
			return err
		}
		p := operations.NewPutGuestDriveByIDParamsWithContext(ctx).WithTimeout(requestTimeout).
			WithDriveID(*d.DriveID).WithBody(d)
		if _, err := api.PutGuestDriveByID(p); err != nil {
			return fmt.Errorf("drive %s: %w", *d.DriveID, apiError(err))
		}
	}
	return nil
}

func putNICs(ctx context.Context, api operations.ClientIface, cfg *Config) error {
	for _, n := range cfg.NICs {
		if err := validated(n); err != nil {
			return err
		}
		p := operations.NewPutGuestNetworkInterfaceByIDParamsWithContext(ctx).WithTimeout(requestTimeout).
			WithIfaceID(*n.IfaceID).WithBody(n)
		if _, err := api.PutGuestNetworkInterfaceByID(p); err != nil {
			return fmt.Errorf("network interface %s: %w", *n.IfaceID, apiError(err))
		}
	}
	return nil
}

func putVsock(ctx context.Context, api operations.ClientIface, cfg *Config) error {
	if cfg.Vsock == nil {
		return nil
	}
	if err := validated(cfg.Vsock); err != nil {
		return err
	}
	p := operations.NewPutGuestVsockParamsWithContext(ctx).WithTimeout(requestTimeout).WithBody(cfg.Vsock)
	_, err := api.PutGuestVsock(p)
	return apiError(err)
}

func putEntropy(ctx context.Context, api operations.ClientIface, cfg *Config) error {
	if cfg.Entropy == nil {
		return nil
	}
	p := operations.NewPutEntropyDeviceParamsWithContext(ctx).WithTimeout(requestTimeout).WithBody(cfg.Entropy)
	_, err := api.PutEntropyDevice(p)
	return apiError(err)
}

func instanceStart(ctx context.Context, api operations.ClientIface, _ *Config) error {
	info := &models.InstanceActionInfo{ActionType: ptr(models.InstanceActionInfoActionTypeInstanceStart)}
	if err := validated(info); err != nil {
		return err
	}
	p := operations.NewCreateSyncActionParamsWithContext(ctx).WithTimeout(requestTimeout).WithInfo(info)
	_, err := api.CreateSyncAction(p)
	return apiError(err)
}
