package gateway

import (
	"testing"
	"time"

	"github.com/contractual/contractual/internal/scheduler"
)

// TestHookHeaders: the gateway passes on the headers the scheduler's
// signature scheme names.
func TestHookHeaders(t *testing.T) {
	if headerTimestamp != scheduler.HeaderTimestamp || headerDelivery != scheduler.HeaderDelivery || headerSignature != scheduler.HeaderSignature {
		t.Fatalf("gateway's headers %s %s %s, the scheduler's %s %s %s", headerTimestamp, headerDelivery, headerSignature,
			scheduler.HeaderTimestamp, scheduler.HeaderDelivery, scheduler.HeaderSignature)
	}
}

func TestHookJob(t *testing.T) {
	for path, want := range map[string]string{
		"/hooks/nightly": "nightly", "/hooks/": "", "/hooks/a/b": "", "/hook/x": "", "/ui/hooks/x": "",
	} {
		if got, ok := hookJob(path); got != want && ok || ok != (want != "") {
			t.Errorf("hookJob(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
}

// TestWindowLimit: max events per key per window, keys apart, a new window
// starts afresh, and a flood of keys shares one count past limitKeys.
func TestWindowLimit(t *testing.T) {
	l := newWindowLimit(2, time.Minute)
	t0 := time.Unix(1000, 0)
	for i, want := range []bool{true, true, false, false} {
		if got := l.allow("a", t0.Add(time.Duration(i)*time.Second)); got != want {
			t.Errorf("a #%d: %v, want %v", i, got, want)
		}
	}
	if !l.allow("b", t0.Add(5*time.Second)) {
		t.Error("b counted against a")
	}
	if !l.allow("a", t0.Add(time.Minute)) {
		t.Error("a new window did not start afresh")
	}
	for i := range limitKeys + 10 {
		l.allow(string(rune('A'+i%26))+time.Duration(i).String(), t0.Add(time.Minute))
	}
	if len(l.counts) > limitKeys+1 {
		t.Errorf("%d keys tracked, over %d", len(l.counts), limitKeys+1)
	}
}
