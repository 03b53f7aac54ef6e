package main

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/firegopher/firegopher/internal/jail"
	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmm/firecracker"
	"github.com/firegopher/firegopher/internal/vmm/firecracker/fctest"
)

// asCLIEnv makes this test binary the firegopher command (its main), for the CLI tests:
// they run it, and it re-executes itself as a detached supervisor, as firegopher does.
const asCLIEnv = "FIREGOPHER_TEST_AS_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(asCLIEnv) != "" {
		main()
		os.Exit(0)
	}
	code := m.Run()
	fctest.Cleanup()
	os.Exit(code)
}

// installDouble installs the fctest doubles of version as a release, from a tarball laid
// out as Firecracker's.
func installDouble(t *testing.T, g *globalFlags, version string) {
	t.Helper()
	tgz := releaseTarball(t, version)
	store, err := g.store()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.ImportFirecracker(tgz, version, ""); err != nil {
		t.Fatal(err)
	}
}

// releaseTarball is a release tarball of the fctest doubles of version, laid out as
// Firecracker's (release-vX-x86_64/firecracker-vX-x86_64 and jailer-vX-x86_64).
func releaseTarball(t *testing.T, version string) string {
	t.Helper()
	rel, err := fctest.Build(version)
	if err != nil {
		t.Fatal(err)
	}
	tgz := filepath.Join(t.TempDir(), "firecracker-v"+version+"-x86_64.tgz")
	f, err := os.Create(tgz)
	if err != nil {
		t.Fatal(err)
	}
	gz, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	for name, src := range map[string]string{"firecracker": rel.Firecracker, "jailer": rel.Jailer} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		tw.WriteHeader(&tar.Header{Name: "release-v" + version + "-x86_64/" + name + "-v" + version + "-x86_64", Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	gz.Close()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return tgz
}

func TestFirecrackerBackendWiring(t *testing.T) {
	g := &globalFlags{stateDir: t.TempDir()}
	h, err := g.host()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(firecrackerVersionEnv, "")
	t.Setenv(cgroupLimitsEnv, "if-available")
	if _, err := h.Backend(spec.VMM{Backend: "firecracker"}); err == nil || !strings.Contains(err.Error(), "firegopher firecracker install") {
		t.Fatalf("no release installed: %v; want an error naming firegopher firecracker install", err)
	}
	if h.Jails != nil {
		t.Error("gc looks for jails before any VM was jailed")
	}
	installDouble(t, g, "1.6.0")
	installDouble(t, g, "1.16.1")

	b, err := h.Backend(spec.VMM{Backend: "firecracker"})
	if err != nil {
		t.Fatal(err)
	}
	fc, ok := b.(*firecracker.Backend)
	if !ok || fc.Jailer == nil {
		t.Fatalf("backend %T %+v, want a jailed Firecracker", b, b)
	}
	store, _ := g.store()
	newest, err := store.LoadFirecracker("1.16.1")
	if err != nil {
		t.Fatal(err)
	}
	jr := fc.Jailer
	switch {
	case fc.Version.String() != "1.16.1":
		t.Errorf("version %s, want the newest installed, 1.16.1", fc.Version)
	case fc.Binary != store.Path(newest.Firecracker) || jr.Binary != store.Path(newest.Jailer):
		t.Errorf("binaries %s and %s, want the cached release's", fc.Binary, jr.Binary)
	case jr.Base != h.JailBase() || jr.Owners == nil || jr.Cgroups != firecracker.CgroupLimitsIfAvailable:
		t.Errorf("jailer %+v, want base %s, owners, limits if available", jr, h.JailBase())
	case jr.NetNS == nil || jr.NetNS("aaaaaaaaaaaa") != "":
		t.Error("a VM without a network namespace must not be asked to join one")
	case !fc.Caps().NetNS:
		t.Error("the jailed backend does not say its VMs have a network namespace each")
	}
	if h2, err := g.host(); err != nil || h2.Jails == nil {
		t.Errorf("once jails exist, gc must look for them (%v)", err)
	}

	t.Setenv(firecrackerVersionEnv, "v1.6.0")
	if b, err := h.Backend(spec.VMM{Backend: "firecracker"}); err != nil || b.(*firecracker.Backend).Version.String() != "1.6.0" {
		t.Errorf("%s=v1.6.0: %v", firecrackerVersionEnv, err)
	}
	t.Setenv(firecrackerVersionEnv, "1.9.0")
	if _, err := h.Backend(spec.VMM{Backend: "firecracker"}); err == nil || !strings.Contains(err.Error(), "install --version 1.9.0") {
		t.Errorf("%s=1.9.0, not installed: %v", firecrackerVersionEnv, err)
	}
	t.Setenv(firecrackerVersionEnv, "")
	// Limits required: a host that cannot give them (v1, hybrid: this CI machine) is told
	// at once, with the way out.
	t.Setenv(cgroupLimitsEnv, "")
	cg, err := jail.DetectCgroups(jail.ProcMounts)
	if err == nil {
		_, err = cg.CgroupArgs(jail.DefaultParent, jail.LimitsFor(1, 128))
	}
	_, berr := h.Backend(spec.VMM{Backend: "firecracker"})
	t.Logf("limits required here: %v", berr)
	if err != nil && (berr == nil || !strings.Contains(berr.Error(), cgroupLimitsEnv+"=if-available")) {
		t.Errorf("limits required on a host without them (%v): %v", err, berr)
	}
	if err == nil && berr != nil {
		t.Errorf("limits required on a host with them: %v", berr)
	}
	t.Setenv(cgroupLimitsEnv, "sometimes")
	if _, err := h.Backend(spec.VMM{Backend: "firecracker"}); err == nil || !strings.Contains(err.Error(), cgroupLimitsEnv) {
		t.Errorf("%s=sometimes: %v", cgroupLimitsEnv, err)
	}
	t.Setenv(cgroupLimitsEnv, "if-available")
	t.Setenv(jailIDsEnv, "1960000000:100")
	if b, err := h.Backend(spec.VMM{Backend: "firecracker"}); err != nil || b.(*firecracker.Backend).Jailer.Owners.Range() != (jail.Range{First: 1960000000, Count: 100}) {
		t.Errorf("%s=1960000000:100: %v", jailIDsEnv, err)
	}
	for _, bad := range []string{"0:100", "1000", "a:b"} {
		t.Setenv(jailIDsEnv, bad)
		if _, err := h.Backend(spec.VMM{Backend: "firecracker"}); err == nil || !strings.Contains(err.Error(), jailIDsEnv) {
			t.Errorf("%s=%s: %v", jailIDsEnv, bad, err)
		}
	}
	t.Setenv(jailIDsEnv, "")
	if _, err := newBackend(h, spec.VMM{Backend: "bochs"}); err == nil || !strings.Contains(err.Error(), "firecracker") {
		t.Errorf("--vmm bochs: %v", err)
	}
}
