package principal

import (
	"context"
	"testing"
)

func TestPrincipal(t *testing.T) {
	if From(context.Background()) != "" {
		t.Error("empty context has a principal")
	}
	if From(With(context.Background(), "device:abc")) != "device:abc" {
		t.Error("With/From")
	}
	for p, want := range map[string]bool{
		"owner": false, "device:abc": true, "session:1": true, "job:nightly": true,
		"": false, "device:": false, "robot:x": false, "job:a b": false,
	} {
		if Valid(p) != want {
			t.Errorf("Valid(%q) = %v", p, !want)
		}
	}
}
