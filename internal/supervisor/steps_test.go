package supervisor

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func recordingSteps(log *[]string, names ...string) Steps {
	var s Steps
	for _, n := range names {
		n := n
		s = append(s, Step{
			Name: n,
			Do:   func(context.Context, *VM) error { *log = append(*log, "do "+n); return nil },
			Undo: func(*VM) error { *log = append(*log, "undo "+n); return nil },
		})
	}
	return s
}

func TestStepsUndoInReverseOnFailure(t *testing.T) {
	var log []string
	s := recordingSteps(&log, "a", "b", "c")
	s, err := s.Replace(Step{Name: "c", Do: func(context.Context, *VM) error { return errors.New("boom") }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Run(context.Background(), &VM{})
	if err == nil || !strings.Contains(err.Error(), "c: boom") {
		t.Fatalf("error %v should name the failing step", err)
	}
	want := []string{"do a", "do b", "undo b", "undo a"}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("got %v, want %v", log, want)
	}
}

func TestStepsTeardownUndoesAll(t *testing.T) {
	var log []string
	teardown, err := recordingSteps(&log, "a", "b").Run(context.Background(), &VM{})
	if err != nil {
		t.Fatal(err)
	}
	if err := teardown(); err != nil {
		t.Fatal(err)
	}
	if err := teardown(); err != nil { // a second call has nothing left to undo
		t.Fatal(err)
	}
	want := []string{"do a", "do b", "undo b", "undo a"}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("got %v, want %v", log, want)
	}
}

func TestStepsEditing(t *testing.T) {
	var log []string
	s := recordingSteps(&log, "a", "c")
	s, _ = s.InsertAfter("a", recordingSteps(&log, "b")[0])
	s, _ = s.InsertBefore("a", recordingSteps(&log, "first")[0])
	s, _ = s.Remove("c")
	if got := s.Names(); !reflect.DeepEqual(got, []string{"first", "a", "b"}) {
		t.Fatalf("got %v", got)
	}
	if _, err := s.Remove("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("removing an unknown step: %v", err)
	}
}

func TestStepsStopWhenCancelled(t *testing.T) {
	var log []string
	ctx, cancel := context.WithCancel(context.Background())
	s := recordingSteps(&log, "a", "b")
	s[0].Do = func(context.Context, *VM) error { log = append(log, "do a"); cancel(); return nil }
	if _, err := s.Run(ctx, &VM{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if want := []string{"do a", "undo a"}; !reflect.DeepEqual(log, want) {
		t.Fatalf("got %v, want %v", log, want)
	}
}
