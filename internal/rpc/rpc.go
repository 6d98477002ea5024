// Package rpc is where Contractual's errors meet Connect: the one mapping
// from errs.Kind to connect.Code (and back, for clients), and the server and
// client options every service uses.
package rpc

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/internal/errs"
)

var kindToCode = map[errs.Kind]connect.Code{
	errs.Internal:           connect.CodeInternal,
	errs.Invalid:            connect.CodeInvalidArgument,
	errs.NotFound:           connect.CodeNotFound,
	errs.AlreadyExists:      connect.CodeAlreadyExists,
	errs.PermissionDenied:   connect.CodePermissionDenied,
	errs.Unauthenticated:    connect.CodeUnauthenticated,
	errs.FailedPrecondition: connect.CodeFailedPrecondition,
	errs.ResourceExhausted:  connect.CodeResourceExhausted,
	errs.DeadlineExceeded:   connect.CodeDeadlineExceeded,
	errs.Unavailable:        connect.CodeUnavailable,
	// The tool ran and failed: the request was fine and policy allowed it,
	// but the call did not complete.
	errs.ToolFailed:    connect.CodeAborted,
	errs.Unimplemented: connect.CodeUnimplemented,
}

var codeToKind = func() map[connect.Code]errs.Kind {
	m := make(map[connect.Code]errs.Kind, len(kindToCode))
	for k, c := range kindToCode {
		m[c] = k
	}
	m[connect.CodeCanceled] = errs.Unavailable
	return m
}()

// Code returns the Connect code for err's kind.
func Code(err error) connect.Code { return kindToCode[errs.KindOf(err)] }

// ToConnect turns err into a *connect.Error with the code of its kind and
// its message. Internal errors keep their detail out of the response: the
// caller learns that something broke, the log learns what.
func ToConnect(err error, log *slog.Logger) *connect.Error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	code := Code(err)
	if code == connect.CodeInternal {
		log.Error("internal error", "err", err)
		return connect.NewError(code, errors.New("internal error"))
	}
	return connect.NewError(code, errors.New(err.Error()))
}

// FromConnect turns an error a Connect client returned into an errs error of
// the matching kind, so that a remote service fails like a local one. Any
// other error (an in-process service's) is returned as it is.
func FromConnect(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	kind, ok := codeToKind[ce.Code()]
	if !ok {
		kind = errs.Internal
	}
	return &errs.Error{Kind: kind, Msg: ce.Message()}
}

// ErrorInterceptor maps every error a handler returns with ToConnect. An
// internal error of a call whose context has ended is the end of the call,
// not a fault: it is reported as deadline_exceeded or unavailable (canceled),
// with the internal error logged.
func ErrorInterceptor(log *slog.Logger) connect.Interceptor { return errorInterceptor{log} }

type errorInterceptor struct{ log *slog.Logger }

func (e errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err == nil {
			return resp, nil
		}
		return nil, e.mapError(ctx, req.Spec().Procedure, err)
	}
}

func (errorInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (e errorInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := next(ctx, conn); err != nil {
			return e.mapError(ctx, conn.Spec().Procedure, err)
		}
		return nil
	}
}

// mapError is ToConnect, with an internal error of an ended call reported
// as its end.
func (e errorInterceptor) mapError(ctx context.Context, proc string, err error) error {
	if cerr := ctx.Err(); cerr != nil && errs.KindOf(err) == errs.Internal {
		e.log.Warn("internal error after the call's context ended", "procedure", proc, "err", err)
		kind := errs.Unavailable
		if errors.Is(cerr, context.DeadlineExceeded) {
			kind = errs.DeadlineExceeded
		}
		err = errs.Wrap(kind, cerr, "%s ended before it completed", proc)
	}
	return ToConnect(err, e.log)
}

// Bearer is a client interceptor that sends a device token in the
// Authorization header of every call, unary or streaming.
func Bearer(token string) connect.Interceptor { return bearer(token) }

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
