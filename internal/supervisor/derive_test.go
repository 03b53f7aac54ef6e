package supervisor

import (
	"reflect"
	"testing"

	"github.com/firegopher/firegopher/internal/spec"
	"github.com/firegopher/firegopher/internal/vmconfig"
	"github.com/firegopher/firegopher/internal/vmm"
)

func TestGuestConfigRlimits(t *testing.T) {
	m := &spec.Machine{ID: "0123456789ab", Mode: spec.ModeApp, Process: spec.Process{Cmd: []string{"true"}}}
	cfg := GuestConfig(m, vmm.Caps{}, nil)
	if want := []vmconfig.Rlimit{{Resource: "nofile", Soft: workloadNoFile, Hard: workloadNoFile}}; !reflect.DeepEqual(cfg.Rlimits, want) {
		t.Fatalf("default rlimits: %+v", cfg.Rlimits)
	}
	m.Process.Rlimits = []spec.Rlimit{{Resource: "nofile", Soft: 1024, Hard: 4096}, {Resource: "core", Soft: 0, Hard: 0}}
	cfg = GuestConfig(m, vmm.Caps{}, nil)
	want := []vmconfig.Rlimit{{Resource: "nofile", Soft: 1024, Hard: 4096}, {Resource: "core"}}
	if !reflect.DeepEqual(cfg.Rlimits, want) {
		t.Fatalf("the machine's rlimits: got %+v, want %+v", cfg.Rlimits, want)
	}
}
