package rpc

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"

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

// TestErrorInterceptorEndedCalls: an internal error of a call whose context
// has ended is reported as the end of the call, not as a fault; other
// errors keep their kind.
func TestErrorInterceptorEndedCalls(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	expired, cancelExpired := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancelExpired()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range []struct {
		name string
		ctx  context.Context
		err  error
		want connect.Code
	}{
		{"live call, internal", context.Background(), errs.E(errs.Internal, "disk on fire"), connect.CodeInternal},
		{"expired call, internal", expired, errs.E(errs.Internal, "sql: context deadline exceeded"), connect.CodeDeadlineExceeded},
		{"canceled call, internal", canceled, errs.E(errs.Internal, "sql: context canceled"), connect.CodeUnavailable},
		{"expired call, invalid", expired, errs.E(errs.Invalid, "bad input"), connect.CodeInvalidArgument},
	} {
		h := ErrorInterceptor(log).WrapUnary(func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) { return nil, tt.err })
		if _, err := h(tt.ctx, connect.NewRequest(&emptypb.Empty{})); connect.CodeOf(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}
