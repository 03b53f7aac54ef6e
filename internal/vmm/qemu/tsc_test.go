package qemu

import (
	"fmt"
	"runtime"
	"testing"
)

func TestMeasureTSCIsStableAndPlausible(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		if _, err := MeasureTSCkHz(); err != ErrNoTSC {
			t.Fatalf("err = %v, want ErrNoTSC off amd64", err)
		}
		return
	}
	a, err := MeasureTSCkHz()
	if err != nil {
		t.Fatal(err)
	}
	b, err := MeasureTSCkHz()
	if err != nil {
		t.Fatal(err)
	}
	// Any x86-64 TSC of this century: 500 MHz .. 6 GHz.
	for _, khz := range []int64{a, b} {
		if khz < 500_000 || khz > 6_000_000 {
			t.Errorf("measured %d kHz, want 500000..6000000", khz)
		}
	}
	if d := a - b; d*100 > a || -d*100 > a {
		t.Errorf("two measurements differ by more than 1%%: %d kHz and %d kHz", a, b)
	}
	t.Logf("TSC %d kHz, %d kHz", a, b)
}

func TestMicrovmTCGCmdlineIsCached(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("no TSC off amd64") // nothing to measure: MeasureTSCkHz's test checks the error
	}
	khz, err := HostTSCkHz()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := HostTSCkHz()
	if again != khz {
		t.Errorf("HostTSCkHz changed between calls: %d then %d", khz, again)
	}
	got, err := MicrovmTCGCmdline()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("tsc_early_khz=%d tsc=reliable", khz); got != want {
		t.Errorf("MicrovmTCGCmdline() = %q, want %q", got, want)
	}
}
