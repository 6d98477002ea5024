package rpc

import (
	"errors"
	"log/slog"
	"testing"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/internal/errs"
)

func TestRoundTrip(t *testing.T) {
	for k := errs.Internal; k <= errs.Unimplemented; k++ {
		code, ok := kindToCode[k]
		if !ok {
			t.Errorf("kind %v has no Connect code", k)
			continue
		}
		ce := ToConnect(errs.E(k, "what went wrong"), slog.New(slog.DiscardHandler))
		if ce.Code() != code {
			t.Errorf("%v → %v, want %v", k, ce.Code(), code)
		}
		back := FromConnect(ce)
		if errs.KindOf(back) != k {
			t.Errorf("%v → %v → %v", k, code, errs.KindOf(back))
		}
		if k != errs.Internal && ce.Message() != "what went wrong" {
			t.Errorf("%v message %q", k, ce.Message())
		}
	}
	if msg := ToConnect(errors.New("db password in path /x"), slog.New(slog.DiscardHandler)).Message(); msg != "internal error" {
		t.Errorf("internal detail leaked: %q", msg)
	}
	if errs.KindOf(FromConnect(connect.NewError(connect.CodeCanceled, errors.New("x")))) != errs.Unavailable {
		t.Error("canceled")
	}
	local := errs.E(errs.NotFound, "local")
	if FromConnect(local) != local || FromConnect(nil) != nil {
		t.Error("a local error must pass through unchanged")
	}
}
