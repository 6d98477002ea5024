package ui

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// TestOutputText: a step's JSON output is indented; a long one is clipped
// by bytes (on a rune boundary) and by lines, and says so.
func TestOutputText(t *testing.T) {
	v, _ := structpb.NewValue(map[string]any{"slug": "a-b"})
	if got, clipped := outputText(&contractualv1.StepRun{Output: v}); clipped || got != "{\n  \"slug\": \"a-b\"\n}" {
		t.Errorf("JSON output: %q %v", got, clipped)
	}
	long := strings.Repeat("é", clipOutput)
	got, clipped := outputText(&contractualv1.StepRun{OutputText: long})
	if !clipped || len(got) > clipOutput || !strings.HasPrefix(long, got) {
		t.Errorf("a long text: %d bytes, clipped %v", len(got), clipped)
	}
	lines := strings.Repeat("x\n", maxOutputLines+10)
	if got, clipped := outputText(&contractualv1.StepRun{OutputText: lines}); !clipped || strings.Count(got, "\n") != maxOutputLines {
		t.Errorf("many lines: %d lines, clipped %v", strings.Count(got, "\n"), clipped)
	}
	if got, clipped := outputText(&contractualv1.StepRun{OutputText: "short"}); clipped || got != "short" {
		t.Errorf("short text: %q %v", got, clipped)
	}
}
