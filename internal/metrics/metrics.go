// Package metrics is Contractual's Prometheus instrumentation: a registry
// per process with the Go runtime and process collectors, a Connect
// interceptor that counts and times every call per procedure, the runner's
// per-tool call metrics, and the /metrics handler.
//
// Every label value comes from a bounded set: procedure names from the
// generated code, codes and outcomes from closed enumerations, tool names
// from approved contracts and capped at MaxTools. Nothing from a request's
// content becomes a label.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/rpc"
)

// durationBuckets spans a fast in-process call (an invocation's p50 is
// about a millisecond, a sandbox instance 100 µs) to a long tool call or a
// long poll (a minute).
var durationBuckets = []float64{
	.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60,
}

// Registry is one process's metrics. Each process (each test) builds its
// own; nothing is registered in Prometheus's global default registry.
type Registry struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	tools    *Tools
}

// NewRegistry returns a registry with the Go runtime and process
// collectors, the RPC metrics and the tool metrics.
func NewRegistry() *Registry {
	r := &Registry{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contractual_rpc_requests_total",
			Help: "Connect calls completed, by side (server or client), procedure and Connect code (ok for success).",
		}, []string{"side", "service", "procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "contractual_rpc_duration_seconds",
			Help:    "Duration of Connect calls, by side (server or client) and procedure.",
			Buckets: durationBuckets,
		}, []string{"side", "service", "procedure"}),
		tools: newTools(),
	}
	r.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		r.requests, r.duration, r.tools.calls, r.tools.duration,
	)
	return r
}

// Handler serves the registry's metrics in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg, MaxRequestsInFlight: 4})
}

// Tools returns the registry's tool metrics.
func (r *Registry) Tools() *Tools { return r.tools }

// Interceptor counts and times every unary call, on a server (pass it to
// connect.WithInterceptors as a handler option) and on a client (as a
// client option) alike: the side label says which, from the call's Spec.
// Give it first in the list, so that it sees the code the caller sees.
// Streams pass through uncounted: every procedure here is unary, and a
// stream's lifetime is no latency.
func (r *Registry) Interceptor() connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			resp, err := next(ctx, req)
			spec := req.Spec()
			side := "server"
			if spec.IsClient {
				side = "client"
			}
			service, procedure := split(spec.Procedure)
			r.duration.WithLabelValues(side, service, procedure).Observe(time.Since(start).Seconds())
			r.requests.WithLabelValues(side, service, procedure, code(err)).Inc()
			return resp, err
		}
	})
}

// split splits "/contractual.v1.RunnerService/Execute" into the service
// and the method.
func split(procedure string) (service, method string) {
	p := strings.TrimPrefix(procedure, "/")
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

// code is the Connect code the caller sees for err: "ok" for none, the
// code of a *connect.Error, and for an error not yet mapped (the
// interceptor placed inside rpc.ErrorInterceptor) the code of its kind.
func code(err error) string {
	if err == nil {
		return "ok"
	}
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code().String()
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled.String()
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded.String()
	}
	return rpc.Code(err).String()
}

// MaxTools caps the tool label's values: the calls of any tool beyond the
// first MaxTools a process saw are counted under "other".
const MaxTools = 1000

// Tools is the runner's per-tool metrics.
type Tools struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec

	mu   sync.Mutex
	seen map[string]bool
}

func newTools() *Tools {
	return &Tools{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contractual_tool_calls_total",
			Help: "Tool calls, by tool and outcome: ok, or the kind of error that refused or ended the call (permission_denied, resource_exhausted, invalid, tool_failed, ...).",
		}, []string{"tool", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "contractual_tool_duration_seconds",
			Help:    "Duration of tool calls, refused ones included, by tool.",
			Buckets: durationBuckets,
		}, []string{"tool"}),
		seen: make(map[string]bool),
	}
}

// Observe records one call of tool that took d and ended with err: the
// outcome is "ok" for nil, else err's errs.Kind ("permission_denied",
// "resource_exhausted", "tool_failed", ...), so it is bounded too. The
// runner calls it once per call, refused calls included.
func (t *Tools) Observe(tool string, err error, d time.Duration) {
	outcome := "ok"
	if err != nil {
		outcome = errs.KindOf(err).String()
	}
	tool = t.label(tool)
	t.calls.WithLabelValues(tool, outcome).Inc()
	t.duration.WithLabelValues(tool).Observe(d.Seconds())
}

// label returns tool, or "other" once MaxTools others have been seen.
func (t *Tools) label(tool string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen[tool] {
		return tool
	}
	if len(t.seen) >= MaxTools {
		return "other"
	}
	t.seen[tool] = true
	return tool
}
