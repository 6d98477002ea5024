package ui

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/errs"
)

// TestHTTPStatus: each error kind maps to its status; anything else is 500.
func TestHTTPStatus(t *testing.T) {
	cases := map[errs.Kind]int{
		errs.Invalid:            400,
		errs.Unauthenticated:    401,
		errs.PermissionDenied:   403,
		errs.NotFound:           404,
		errs.AlreadyExists:      409,
		errs.FailedPrecondition: 409,
		errs.ResourceExhausted:  429,
		errs.Internal:           500,
		errs.Unavailable:        500,
		errs.DeadlineExceeded:   500,
		errs.ToolFailed:         500,
	}
	for k, want := range cases {
		if got := httpStatus(errs.E(k, "x")); got != want {
			t.Errorf("%v: %d, want %d", k, got, want)
		}
	}
	if got := httpStatus(errors.New("plain")); got != 500 {
		t.Errorf("a plain error: %d", got)
	}
}

// TestInternalErrorHidden: an internal error's detail is logged, never
// shown.
func TestInternalErrorHidden(t *testing.T) {
	var logs bytes.Buffer
	u := &UI{log: slog.New(slog.NewTextHandler(&logs, nil))}
	r := httptest.NewRequest(http.MethodGet, "/ui/x", nil)
	status, msg := u.publicError(r, errs.E(errs.Unavailable, "database /secret/path is locked"))
	if status != 500 || strings.Contains(msg, "/secret/path") || msg != internalMessage {
		t.Errorf("shown: %d %q", status, msg)
	}
	if !strings.Contains(logs.String(), "/secret/path") {
		t.Errorf("not logged: %s", logs.String())
	}
	status, msg = u.publicError(r, errs.E(errs.NotFound, "no contract sha256:ab"))
	if status != 404 || msg != "no contract sha256:ab" {
		t.Errorf("a closed kind: %d %q", status, msg)
	}
}
