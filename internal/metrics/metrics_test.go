package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/emptypb"

	v1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/metrics"
	"github.com/contractual/contractual/internal/rpc"
)

// runner answers Execute by its input: "ok" succeeds, the others fail as
// named.
type runner struct{}

func (runner) Execute(_ context.Context, req *v1.ExecuteRequest) (*v1.ExecuteResponse, error) {
	switch in := string(req.Input); in {
	case "ok":
		return &v1.ExecuteResponse{Output: []byte("done")}, nil
	case "denied":
		return nil, errs.E(errs.PermissionDenied, "no grant")
	case "exhausted":
		return nil, errs.E(errs.ResourceExhausted, "over the limit")
	default:
		return nil, fmt.Errorf("broken on %q", in)
	}
}

// serveRunner serves runner through the server interceptors and returns a
// client of it that calls through the client interceptors.
func serveRunner(t *testing.T, server, client []connect.Interceptor) contractualv1connect.RunnerServiceClient {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(contractualv1connect.NewRunnerServiceHandler(runner{}, connect.WithInterceptors(server...)))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return contractualv1connect.NewRunnerServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(client...))
}

// call makes one Execute call per input and checks that each but "ok"
// failed.
func call(t *testing.T, c contractualv1connect.RunnerServiceClient, inputs ...string) {
	t.Helper()
	for _, in := range inputs {
		_, err := c.Execute(t.Context(), &v1.ExecuteRequest{Input: []byte(in)})
		if (err == nil) != (in == "ok") {
			t.Fatalf("Execute(%q): err = %v", in, err)
		}
	}
}

// scrape gets reg's /metrics over HTTP and parses the exposition.
func scrape(t *testing.T, reg *metrics.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(reg.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the exposition: %v", err)
	}
	return families
}

// series returns the family's series as "label=value,..." → metric.
func series(families map[string]*dto.MetricFamily, name string) map[string]*dto.Metric {
	out := map[string]*dto.Metric{}
	if f := families[name]; f != nil {
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			slices.Sort(labels)
			out[strings.Join(labels, ",")] = m
		}
	}
	return out
}

func counts(families map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	for k, m := range series(families, name) {
		out[k] = m.GetCounter().GetValue()
	}
	return out
}

func histogramCounts(families map[string]*dto.MetricFamily, name string) map[string]uint64 {
	out := map[string]uint64{}
	for k, m := range series(families, name) {
		out[k] = m.GetHistogram().GetSampleCount()
	}
	return out
}

const execute = "procedure=Execute,service=contractual.v1.RunnerService"

func TestInterceptorCountsEveryCallByProcedureAndCode(t *testing.T) {
	// One registry on both ends, as in a process that serves and calls:
	// each call is counted once per side.
	reg := metrics.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	c := serveRunner(t,
		[]connect.Interceptor{reg.Interceptor(), rpc.ErrorInterceptor(log)},
		[]connect.Interceptor{reg.Interceptor()})
	call(t, c, "ok", "denied", "ok", "exhausted", "boom", "ok", "denied")

	families := scrape(t, reg)
	want := map[string]float64{}
	for _, side := range []string{"client", "server"} {
		for code, n := range map[string]float64{"ok": 3, "permission_denied": 2, "resource_exhausted": 1, "internal": 1} {
			want["code="+code+","+execute+",side="+side] = n
		}
	}
	got := counts(families, "contractual_rpc_requests_total")
	if !maps.Equal(got, want) {
		t.Errorf("contractual_rpc_requests_total:\n got %v\nwant %v", got, want)
	}
	gotH := histogramCounts(families, "contractual_rpc_duration_seconds")
	wantH := map[string]uint64{execute + ",side=client": 7, execute + ",side=server": 7}
	if !maps.Equal(gotH, wantH) {
		t.Errorf("contractual_rpc_duration_seconds counts:\n got %v\nwant %v", gotH, wantH)
	}
	// The Go runtime and process collectors are in this registry too.
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if families[name] == nil {
			t.Errorf("no %s in the exposition", name)
		}
	}
}

func TestInterceptorInsideTheErrorMappingCountsTheCallersCode(t *testing.T) {
	// Placed after rpc.ErrorInterceptor, the interceptor sees errs errors,
	// not yet Connect ones: it still counts the code the caller gets.
	reg := metrics.NewRegistry()
	c := serveRunner(t, []connect.Interceptor{rpc.ErrorInterceptor(slog.New(slog.DiscardHandler)), reg.Interceptor()}, nil)
	call(t, c, "ok", "denied", "exhausted", "boom")
	got := counts(scrape(t, reg), "contractual_rpc_requests_total")
	want := map[string]float64{}
	for _, code := range []string{"ok", "permission_denied", "resource_exhausted", "internal"} {
		want["code="+code+","+execute+",side=server"] = 1
	}
	if !maps.Equal(got, want) {
		t.Errorf("contractual_rpc_requests_total:\n got %v\nwant %v", got, want)
	}
}

func TestInterceptorCountsAClientCallThatNeverArrived(t *testing.T) {
	reg := metrics.NewRegistry()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	c := contractualv1connect.NewRunnerServiceClient(http.DefaultClient, url, connect.WithInterceptors(reg.Interceptor()))
	if _, err := c.Execute(t.Context(), &v1.ExecuteRequest{}); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("Execute against nothing: %v, want unavailable", err)
	}
	got := counts(scrape(t, reg), "contractual_rpc_requests_total")
	want := map[string]float64{"code=unavailable," + execute + ",side=client": 1}
	if !maps.Equal(got, want) {
		t.Errorf("contractual_rpc_requests_total:\n got %v\nwant %v", got, want)
	}
}

func TestInterceptorPassesStreamsThrough(t *testing.T) {
	reg := metrics.NewRegistry()
	const procedure = "/test.v1.WatchService/Watch"
	mux := http.NewServeMux()
	mux.Handle(procedure, connect.NewServerStreamHandler(procedure,
		func(_ context.Context, _ *connect.Request[emptypb.Empty], s *connect.ServerStream[emptypb.Empty]) error {
			for range 3 {
				if err := s.Send(&emptypb.Empty{}); err != nil {
					return err
				}
			}
			return nil
		}, connect.WithInterceptors(reg.Interceptor())))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+procedure, connect.WithInterceptors(reg.Interceptor()))
	stream, err := c.CallServerStream(t.Context(), connect.NewRequest(&emptypb.Empty{}))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for stream.Receive() {
		n++
	}
	if err := stream.Err(); err != nil || n != 3 {
		t.Fatalf("received %d messages, err %v; want 3, nil", n, err)
	}
	stream.Close()
	families := scrape(t, reg)
	if got := counts(families, "contractual_rpc_requests_total"); len(got) != 0 {
		t.Errorf("a stream was counted: %v", got)
	}
}

func TestRegistriesAreIndependent(t *testing.T) {
	a, b := metrics.NewRegistry(), metrics.NewRegistry()
	a.Tools().Observe("weather.forecast", nil, time.Millisecond)
	if got := counts(scrape(t, a), "contractual_tool_calls_total"); len(got) != 1 {
		t.Errorf("a: %v, want one series", got)
	}
	if got := counts(scrape(t, b), "contractual_tool_calls_total"); len(got) != 0 {
		t.Errorf("b holds a's observation: %v", got)
	}
}

func TestToolsCountsCallsByOutcomeAndTimesThem(t *testing.T) {
	reg := metrics.NewRegistry()
	tools := reg.Tools()
	tools.Observe("weather.forecast", nil, 2*time.Millisecond)
	tools.Observe("weather.forecast", nil, 3*time.Millisecond)
	tools.Observe("weather.forecast", errs.E(errs.PermissionDenied, "decision expired"), 100*time.Microsecond)
	tools.Observe("weather.forecast", fmt.Errorf("call: %w", errs.E(errs.ResourceExhausted, "memory")), 5*time.Millisecond)
	tools.Observe("mail.send", errs.E(errs.Invalid, "input"), 0)
	tools.Observe("mail.send", errs.E(errs.ToolFailed, "trap"), time.Second)
	tools.Observe("mail.send", errors.New("unexpected"), time.Millisecond)

	families := scrape(t, reg)
	got := counts(families, "contractual_tool_calls_total")
	want := map[string]float64{
		"outcome=ok,tool=weather.forecast":                 2,
		"outcome=permission_denied,tool=weather.forecast":  1,
		"outcome=resource_exhausted,tool=weather.forecast": 1,
		"outcome=invalid,tool=mail.send":                   1,
		"outcome=tool_failed,tool=mail.send":               1,
		"outcome=internal,tool=mail.send":                  1,
	}
	if !maps.Equal(got, want) {
		t.Errorf("contractual_tool_calls_total:\n got %v\nwant %v", got, want)
	}
	h := series(families, "contractual_tool_duration_seconds")
	for tool, w := range map[string]struct {
		n   uint64
		sum float64
	}{"weather.forecast": {4, 0.0101}, "mail.send": {3, 1.001}} {
		m := h["tool="+tool].GetHistogram()
		if m.GetSampleCount() != w.n || !near(m.GetSampleSum(), w.sum) {
			t.Errorf("%s duration: %d samples, sum %g; want %d, %g", tool, m.GetSampleCount(), m.GetSampleSum(), w.n, w.sum)
		}
	}
}

func TestToolsCapsTheToolLabel(t *testing.T) {
	reg := metrics.NewRegistry()
	tools := reg.Tools()
	for i := range metrics.MaxTools {
		tools.Observe(fmt.Sprintf("tool%d.run", i), nil, time.Millisecond)
	}
	// Beyond the cap a new tool is "other"; a tool seen before keeps its
	// own label.
	for i := range 5 {
		tools.Observe(fmt.Sprintf("late%d.run", i), nil, time.Millisecond)
	}
	tools.Observe("tool7.run", errs.E(errs.PermissionDenied, "no"), time.Millisecond)

	families := scrape(t, reg)
	got := counts(families, "contractual_tool_calls_total")
	if len(got) != metrics.MaxTools+2 {
		t.Errorf("%d series, want %d (one per tool, other, and tool7's denial)", len(got), metrics.MaxTools+2)
	}
	if n := got["outcome=ok,tool=other"]; n != 5 {
		t.Errorf("other: %v calls, want 5", n)
	}
	if n := got["outcome=permission_denied,tool=tool7.run"]; n != 1 {
		t.Errorf("tool7.run denied: %v calls, want 1", n)
	}
	for k := range got {
		if strings.Contains(k, "late") {
			t.Errorf("a tool beyond the cap has its own series: %s", k)
		}
	}
	if h := histogramCounts(families, "contractual_tool_duration_seconds"); len(h) != metrics.MaxTools+1 || h["tool=other"] != 5 {
		t.Errorf("duration: %d series, other %d; want %d, 5", len(h), h["tool=other"], metrics.MaxTools+1)
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
