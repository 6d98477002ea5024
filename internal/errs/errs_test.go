package errs

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestError(t *testing.T) {
	cause := io.ErrUnexpectedEOF
	tests := []struct {
		name string
		err  error
		kind Kind
		text string
	}{
		{"plain", E(Invalid, "field %q is empty", "name"), Invalid, `field "name" is empty`},
		{"folded wrap", E(NotFound, "module %s: %w", "sha256:ab", cause), NotFound, "module sha256:ab: unexpected EOF"},
		{"wrap", Wrap(Unavailable, cause, "reading module"), Unavailable, "reading module: unexpected EOF"},
		{"wrapped twice", fmt.Errorf("outer: %w", E(PermissionDenied, "no grant")), PermissionDenied, "outer: no grant"},
		{"foreign", cause, Internal, "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KindOf(tt.err); got != tt.kind {
				t.Errorf("KindOf = %v, want %v", got, tt.kind)
			}
			if got := tt.err.Error(); got != tt.text {
				t.Errorf("Error() = %q, want %q", got, tt.text)
			}
		})
	}
	if !errors.Is(E(Invalid, "x: %w", cause), cause) {
		t.Error("E lost the wrapped cause")
	}
	if Wrap(Invalid, nil, "x") != nil {
		t.Error("Wrap(nil) must be nil")
	}
	if Kind(200).String() != "kind(200)" || ToolFailed.String() != "tool_failed" {
		t.Error("Kind.String")
	}
}
