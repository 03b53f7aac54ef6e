package fctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// Release is one modelled release's doubles: Firecracker and Jailer are static binaries
// (they run in an empty chroot), two builds of one program whose role is fixed at link
// time: either keeps its role under any name, as in a content-addressed cache.
type Release struct {
	Version     string
	Dir         string
	Firecracker string // <Dir>/firecracker
	Jailer      string // <Dir>/jailer
}

var (
	buildMu  sync.Mutex
	builds   = map[string]Release{}
	buildDir string
)

// Build compiles the doubles of version (once per process; the go build cache makes it
// quick after the first time) into a temporary directory that Cleanup removes.
func Build(version string) (Release, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if r, ok := builds[version]; ok {
		return r, nil
	}
	if _, err := NewProfile(version); err != nil {
		return Release{}, err
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "fctest-")
		if err != nil {
			return Release{}, err
		}
		// The jailer runs the copy as an unprivileged uid: the directory must be searchable.
		os.Chmod(d, 0o755)
		buildDir = d
	}
	dir := filepath.Join(buildDir, "v"+version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Release{}, err
	}
	r := Release{Version: version, Dir: dir, Firecracker: filepath.Join(dir, "firecracker"), Jailer: filepath.Join(dir, "jailer")}
	_, src, _, _ := runtime.Caller(0)
	for role, out := range map[string]string{"firecracker": r.Firecracker, "jailer": r.Jailer} {
		cmd := exec.Command(goTool(), "build", "-trimpath", "-ldflags", "-X main.version="+version+" -X main.role="+role, "-o", out, "./cmd/fcdouble")
		cmd.Dir = filepath.Dir(src)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return Release{}, fmt.Errorf("fctest: build the v%s %s double: %v\n%s", version, role, err, out)
		}
	}
	builds[version] = r
	return r, nil
}

// Cleanup removes what Build made; call it from TestMain after m.Run.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
		buildDir, builds = "", map[string]Release{}
	}
}

func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); runtime.GOROOT() != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// SubtestName is the name of a release's subtest: "v1.16.1".
func SubtestName(version string) string { return "v" + strings.TrimPrefix(version, "v") }
