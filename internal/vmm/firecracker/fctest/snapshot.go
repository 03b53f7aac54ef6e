//go:build linux

package fctest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
)

// Snapshots, as the fake models them. The guest's "memory" is its process, which no file
// can hold: the state file records the machine (its devices by the paths and names the
// VMM was given, the guest's boot parameters) and the memory file a tag tying it to that
// state. A load brings back a guest that was parked where our init waits for its config
// (a snapshot template): it runs from there, a new process, and takes its config over a
// new control connection, as a restored guest does after Firecracker resets every vsock
// connection (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET). A snapshot of any other guest loads,
// but the guest says it cannot be modelled and reboots.

// Fault messages of the snapshot paths (src/vmm/src/rpc_interface.rs, persist.rs).
const (
	msgNotPaused     = "Cannot create a snapshot of a microVM that is not paused."
	msgMemExactlyOne = "Only one of mem_file_path or mem_backend must be specified."
)

// snapshotState is the fake's snapshot file.
type snapshotState struct {
	// Release is the Firecracker that wrote it: a snapshot loads only on the same one.
	Release string        `json:"fctest_snapshot"`
	Guest   guestParams   `json:"guest"`
	Machine machineConfig `json:"machine"`
	Drives  []*drive      `json:"drives"`
	NICs    []*nic        `json:"nics"`
	Vsock   *vsockDev     `json:"vsock"`
	Entropy bool          `json:"entropy"`
	// MemoryTag is in the memory file too: a state loads only with its own memory.
	MemoryTag string `json:"memory_tag"`
}

const memoryHeader = "fctest guest memory "

func (s *Server) patchVM(_ Operation, body []byte) (any, error) {
	var v struct {
		State string `json:"state"`
	}
	if err := decode(body, &v); err != nil {
		return nil, err
	}
	paused := v.State == "Paused"
	if paused {
		s.state = StatePaused
	} else {
		s.state = StateRunning
		s.markResumed()
	}
	if s.OnPause != nil {
		s.OnPause(paused)
	}
	return nil, nil
}

// markResumed lets the guest of a loaded snapshot start (once).
func (s *Server) markResumed() {
	select {
	case <-s.resumed:
	default:
		close(s.resumed)
	}
}

func (s *Server) createSnapshot(_ Operation, body []byte) (any, error) {
	var c struct {
		MemFilePath  string `json:"mem_file_path"`
		SnapshotPath string `json:"snapshot_path"`
		SnapshotType string `json:"snapshot_type"`
	}
	if err := decode(body, &c); err != nil {
		return nil, err
	}
	if s.state != StatePaused {
		return nil, faultError(msgNotPaused)
	}
	if c.SnapshotType == "Diff" && !s.machine.TrackDirtyPages {
		return nil, faultf("Cannot create a diff snapshot: dirty page tracking is not enabled (track_dirty_pages).")
	}
	if s.guest == nil {
		return nil, faultf("fctest: the guest has not started: nothing to snapshot")
	}
	tag := make([]byte, 8)
	rand.Read(tag)
	st := snapshotState{
		Release: s.Profile.Version, Guest: *s.guest, Machine: s.machine, Drives: s.drives,
		NICs: s.nics, Vsock: s.vsock, Entropy: s.entropy, MemoryTag: hex.EncodeToString(tag),
	}
	state, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	// Written by this process: in a jail, as the jail's uid, at the in-jail paths.
	if err := os.WriteFile(c.MemFilePath, []byte(memoryHeader+st.MemoryTag+"\n"), 0o600); err != nil {
		return nil, faultf("Cannot create the snapshot: memory file %s: %s", c.MemFilePath, osErr(err))
	}
	if err := os.WriteFile(c.SnapshotPath, state, 0o600); err != nil {
		return nil, faultf("Cannot create the snapshot: snapshot file %s: %s", c.SnapshotPath, osErr(err))
	}
	s.logf("fc_api", "fctest: snapshot of a %d MiB guest written to %s and %s", s.machine.MemSizeMib, c.SnapshotPath, c.MemFilePath)
	return nil, nil
}

// loadParams is SnapshotLoadParams of either release (the schema has already refused
// what the release does not know).
type loadParams struct {
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
	MemBackend   *struct {
		BackendType string `json:"backend_type"`
		BackendPath string `json:"backend_path"`
	} `json:"mem_backend"`
	EnableDiffSnapshots bool `json:"enable_diff_snapshots"`
	TrackDirtyPages     bool `json:"track_dirty_pages"`
	ResumeVM            bool `json:"resume_vm"`
	NetworkOverrides    []struct {
		IfaceID     string `json:"iface_id"`
		HostDevName string `json:"host_dev_name"`
	} `json:"network_overrides"`
	VsockOverride *struct {
		UdsPath string `json:"uds_path"`
	} `json:"vsock_override"`
	ClockRealtime bool `json:"clock_realtime"`
}

// loadSnapshot restores the microVM. A load that fails past the body's checks ends the
// process, as Firecracker's does (it may have half-built the VM).
func (s *Server) loadSnapshot(_ Operation, body []byte) (any, error) {
	var l loadParams
	if err := decode(body, &l); err != nil {
		return nil, err
	}
	mem := l.MemFilePath
	switch {
	case (l.MemFilePath == "") == (l.MemBackend == nil):
		return nil, faultError(msgMemExactlyOne)
	case l.MemBackend != nil && l.MemBackend.BackendType != "File":
		return nil, faultf("fctest: memory backend %s is not modelled by the fake", l.MemBackend.BackendType)
	case l.MemBackend != nil:
		mem = l.MemBackend.BackendPath
	}
	if err := s.load(l, mem); err != nil {
		s.logf("fc_api", "Load microVM snapshot error: %v. Firecracker exits.", err)
		close(s.loadFailed)
		return nil, faultf("Load microVM snapshot error: %v", err)
	}
	return nil, nil
}

func (s *Server) load(l loadParams, memPath string) error {
	raw, err := os.ReadFile(l.SnapshotPath)
	if err != nil {
		return fmt.Errorf("Cannot open the snapshot file: %s", osErr(err))
	}
	var st snapshotState
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil || st.Release == "" {
		return fmt.Errorf("Cannot deserialize the microVM state: %s is not a snapshot", l.SnapshotPath)
	}
	if st.Release != s.Profile.Version {
		return fmt.Errorf("Invalid snapshot version: the snapshot was created by Firecracker v%s, this is v%s", st.Release, s.Profile.Version)
	}
	memData, err := os.ReadFile(memPath)
	if err != nil {
		return fmt.Errorf("Cannot open the memory file: %s", osErr(err))
	}
	if string(memData) != memoryHeader+st.MemoryTag+"\n" {
		return fmt.Errorf("Cannot restore the guest memory: %s is not the memory of %s", memPath, l.SnapshotPath)
	}
	// The devices come back at the paths and names they had, unless overridden: every
	// file must be there, with the mode the drive had.
	for _, o := range l.NetworkOverrides {
		found := false
		for _, n := range st.NICs {
			if n.IfaceID == o.IfaceID {
				n.HostDevName, found = o.HostDevName, true
			}
		}
		if !found {
			return fmt.Errorf("Invalid network override: the snapshot has no interface %s", o.IfaceID)
		}
	}
	if l.VsockOverride != nil {
		if st.Vsock == nil {
			return fmt.Errorf("Invalid vsock override: the snapshot has no vsock device")
		}
		st.Vsock.UdsPath = l.VsockOverride.UdsPath
	}
	var closers []func()
	undo := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, d := range st.Drives {
		flags := os.O_RDWR
		if d.IsReadOnly {
			flags = os.O_RDONLY
		}
		f, err := os.OpenFile(d.PathOnHost, flags, 0)
		if err != nil {
			undo()
			return fmt.Errorf("Block device %s: BackingFile(%s, %q)", d.DriveID, osErr(err), d.PathOnHost)
		}
		d.f = f
		closers = append(closers, func() { f.Close() })
	}
	for _, n := range st.NICs {
		tap, err := openTAP(n.HostDevName)
		if err != nil {
			undo()
			return fmt.Errorf("Net device %s: Open tap device failed: %s (%s)", n.IfaceID, osErr(err), n.HostDevName)
		}
		n.tap = tap
		closers = append(closers, func() { tap.Close() })
	}
	if v := st.Vsock; v != nil {
		ln, err := net.Listen("unix", v.UdsPath)
		if err != nil {
			undo()
			return fmt.Errorf("Vsock: UnixBind(%s)", osErr(err))
		}
		v.ln = ln
		go s.serveHostConnects(ln)
	}
	guest := st.Guest
	guest.Restored = true
	guest.Drives = nil
	for _, d := range drivesInGuestOrder(st.Drives) {
		guest.Drives = append(guest.Drives, guestDrive{Path: d.PathOnHost, ReadOnly: d.IsReadOnly})
	}
	guest.NICs = nil
	for _, n := range st.NICs {
		guest.NICs = append(guest.NICs, n.HostDevName)
	}
	guest.Vsock = ""
	if st.Vsock != nil {
		guest.Vsock = st.Vsock.UdsPath
	}
	s.machine, s.drives, s.nics, s.vsock, s.entropy = st.Machine, st.Drives, st.NICs, st.Vsock, st.Entropy
	s.machine.TrackDirtyPages = l.TrackDirtyPages || l.EnableDiffSnapshots
	saved := guest
	saved.Restored = false
	s.restored, s.guest = &guest, &saved
	s.state = StatePaused
	s.logf("fc_api", "fctest: restored a %d MiB guest from %s", s.machine.MemSizeMib, l.SnapshotPath)
	close(s.Started)
	if l.ResumeVM {
		s.state = StateRunning
		s.markResumed()
	}
	return nil
}

// drivesInGuestOrder is guestDrives for a list of drives.
func drivesInGuestOrder(ds []*drive) []*drive {
	s := &Server{drives: ds}
	return s.guestDrives()
}
