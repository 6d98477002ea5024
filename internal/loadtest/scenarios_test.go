package loadtest_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/loadtest"
)

// The scenarios' sizes in a benchmark run; the TestLoad… tests use small
// ones of their own.
var (
	flagTools    = flag.Int("loadtest.tools", 1000, "approved tools in BenchmarkExternalThousandTools")
	flagFlooders = flag.Int("loadtest.flooders", 16, "concurrent looping calls in BenchmarkExternalFairness")
	flagFloodFor = flag.Duration("loadtest.floodfor", time.Minute, "the longest BenchmarkExternalFairness measures under the flood")
	flagIdle     = flag.Duration("loadtest.idle", 30*time.Second, "the longest BenchmarkExternalThousandTools waits for an idle server's RSS to return to within 50 MB of its post-start RSS")
)

const repo = "../.."

var (
	binDir            string
	buildOnce         sync.Once
	bin, buildFailure = "", error(nil)
)

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "contractual-loadtest-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// binary builds the contractual command once per test process. If that is
// impossible it skips, except in CI (CI=true), where it fails.
func binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		bin, buildFailure = loadtest.Build(ctx, binDir)
	})
	if buildFailure != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("cannot build the server: %v", buildFailure)
		}
		tb.Skipf("skipping: cannot build the server (%v); in CI this fails", buildFailure)
	}
	return bin
}

// serve starts a server process with a fresh data directory; it stops at
// the end of the test, and its log is shown if the test failed.
func serve(tb testing.TB) *loadtest.Server {
	tb.Helper()
	s, err := loadtest.Start(context.Background(), binary(tb), filepath.Join(tb.TempDir(), "data"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("stopping the server: %v", err)
		}
		if tb.Failed() {
			b, _ := os.ReadFile(s.Log)
			tb.Logf("server log (%s):\n%s", s.Log, b[max(0, len(b)-8192):])
		}
	})
	return s
}

// owner pairs s's owner device, with an HTTP client for conns callers.
func owner(tb testing.TB, s *loadtest.Server, conns int) *loadtest.Device {
	tb.Helper()
	d, err := loadtest.PairOwner(context.Background(), loadtest.NewHTTPClient(conns), s, "load owner")
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// device pairs another device with scope invoke, a principal of its own.
func device(tb testing.TB, o *loadtest.Device, name string, conns int) *loadtest.Device {
	tb.Helper()
	d, err := o.Pair(context.Background(), loadtest.NewHTTPClient(conns), name, "invoke")
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func read(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(repo, path))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func publish(tb testing.TB, d *loadtest.Device, module []byte, contractYAML string) {
	tb.Helper()
	if _, _, err := d.PublishApproved(context.Background(), module, contractYAML); err != nil {
		tb.Fatal(err)
	}
}

// The fixtures: count.wasm (461 bytes, no WASI) is the small tool,
// loop.wasm's run spins until its timeout, textkit is a 3.2 MiB Go tool.
const (
	countWasm   = "runtime/sandbox/testdata/hostile/count.wasm"
	loopWasm    = "runtime/sandbox/testdata/hostile/loop.wasm"
	textkitWasm = "tools/textkit/textkit.wasm"
)

// smallContract is count.wasm's contract under the name %[2]s.
const smallContract = `module: %%s
name: %s
version: 1.0.0
publisher: load tests
description: Counts vowels.
tools:
  - export: count_vowels
    description: Count the vowels of the input.
    risk: low
    input_schema: {type: object, properties: {text: {type: string}}, required: [text]}
`

// spinContract is loop.wasm's contract with timeout_ms %d.
const spinContract = `module: %%s
name: spin
version: 1.0.0
publisher: load tests
description: Spins until its timeout.
tools:
  - export: run
    description: Spin.
    risk: low
    input_schema: {type: object}
limits: {memory_mib: 1, timeout_ms: %d, output_bytes: 1024}
`

// textkitContract is textkit's committed contract at version 1.0.<n>, for
// any build of its module.
func textkitContract(tb testing.TB, n int) string {
	src := string(read(tb, "tools/textkit/contract.yaml"))
	first, rest, _ := strings.Cut(src, "\n")
	if !strings.HasPrefix(first, "module: ") || !strings.Contains(rest, "version: 1.0.0\n") {
		tb.Fatalf("tools/textkit/contract.yaml changed shape: %q", first)
	}
	return "module: %s\n" + strings.Replace(rest, "version: 1.0.0\n", fmt.Sprintf("version: 1.0.%d\n", n), 1)
}

func value(tb testing.TB, v any) *structpb.Value {
	tb.Helper()
	pv, err := structpb.NewValue(v)
	if err != nil {
		tb.Fatal(err)
	}
	return pv
}

// invoker returns a call of tool with input, as d.
func invoker(tb testing.TB, d *loadtest.Device, tool string, input any) func(context.Context, int) error {
	req := &contractualv1.InvokeRequest{Tool: tool, Input: value(tb, input)}
	return func(ctx context.Context, _ int) error {
		_, err := d.Tools.Invoke(ctx, req)
		return err
	}
}

var smallInput = map[string]any{"text": "the quick brown fox jumps over the lazy dog"}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func mb(n uint64) float64        { return float64(n) / 1e6 }

// report reports r's percentiles and throughput under prefix.
func report(b *testing.B, prefix string, r loadtest.Result) {
	b.ReportMetric(ms(r.Quantile(0.50)), prefix+"p50-ms")
	b.ReportMetric(ms(r.Quantile(0.99)), prefix+"p99-ms")
	b.ReportMetric(r.Throughput(), prefix+"calls/s")
}

// mustAllOK fails unless every one of want calls of r succeeded.
func mustAllOK(tb testing.TB, what string, r loadtest.Result, want int) {
	tb.Helper()
	if r.Calls() != want || r.OK() != want {
		tb.Fatalf("%s: %v; want %d calls, all ok", what, r, want)
	}
}

// --- a) Invoke against a bare authenticated call ---

// invokeSetup is a server with the small tool approved and its owner.
func invokeSetup(tb testing.TB, conns int) (*loadtest.Server, *loadtest.Device) {
	s := serve(tb)
	o := owner(tb, s, conns)
	publish(tb, o, read(tb, countWasm), fmt.Sprintf(smallContract, "vowels"))
	return s, o
}

// bareCall is the cheapest authenticated Connect call: list the contracts
// of a name that has none (the token check, the interceptor, one indexed
// query, an empty answer).
func bareCall(d *loadtest.Device) func(context.Context, int) error {
	req := &contractualv1.ListContractsRequest{Name: "no-such-tool"}
	return func(ctx context.Context, _ int) error {
		_, err := d.Policy.ListContracts(ctx, req)
		return err
	}
}

// invokeScenario makes n invocations of the small tool and n bare calls at
// concurrency conc, interleaved in rounds, and reads the server's peak RSS
// over them.
func invokeScenario(tb testing.TB, s *loadtest.Server, o *loadtest.Device, conc, n int) (invoke, bare loadtest.Result, peak uint64) {
	tb.Helper()
	if err := s.ResetPeakRSS(); err != nil {
		tb.Fatal(err)
	}
	bare, invoke = loadtest.Interleave(context.Background(), conc, n, 10, bareCall(o), invoker(tb, o, "vowels.count_vowels", smallInput))
	peak, err := s.PeakRSS()
	if err != nil {
		tb.Fatal(err)
	}
	return invoke, bare, peak
}

// TestLoadInvoke runs scenario a briefly: every call succeeds at each
// concurrency, and the counts add up.
func TestLoadInvoke(t *testing.T) {
	s, o := invokeSetup(t, 8)
	for _, conc := range []int{1, 8} {
		invoke, bare, peak := invokeScenario(t, s, o, conc, 4*conc)
		mustAllOK(t, "invoke", invoke, 4*conc)
		mustAllOK(t, "bare", bare, 4*conc)
		if peak == 0 {
			t.Error("no peak RSS")
		}
	}
}

// BenchmarkExternalInvoke: the small tool's invocation over HTTP against a
// separate server process, at concurrency 1, 8, 32 and 128, against the
// cheapest authenticated call at the same concurrency, interleaved in
// rounds. b.N is the calls of each (at least 10 per client):
//
//	go test -run '^$' -bench ExternalInvoke -benchtime 2000x ./internal/loadtest
func BenchmarkExternalInvoke(b *testing.B) {
	s, o := invokeSetup(b, 128)
	for _, conc := range []int{1, 8, 32, 128} {
		b.Run(fmt.Sprintf("c%d", conc), func(b *testing.B) {
			n := max(b.N, 10*conc)
			invoke, bare, peak := invokeScenario(b, s, o, conc, n)
			mustAllOK(b, "invoke", invoke, n)
			mustAllOK(b, "bare", bare, n)
			b.ReportMetric(0, "ns/op")
			report(b, "", invoke)
			report(b, "bare-", bare)
			b.ReportMetric(ms(invoke.Quantile(0.5))/ms(bare.Quantile(0.5)), "p50/bare")
			b.ReportMetric(mb(peak), "rss-peak-MB")
		})
	}
}

// --- b) Fairness: a small call while another principal floods ---

type fairness struct {
	idle, flooded loadtest.Result // principal A's small calls
	flood         loadtest.Result // principal B's looping calls
	floodEnded    int             // B's calls that had ended before A began measuring
}

// fairScenario measures n small calls of principal A at concurrency 1 on
// the idle server, then again while principal B keeps flooders looping
// calls (each up to timeout) in flight; it stops measuring after floodFor
// even if fewer than n calls were made. A's measurement under the flood
// starts once flooders of B's calls have ended, so that the flood is in
// its steady state rather than starting.
func fairScenario(tb testing.TB, n, flooders int, timeout, floodFor time.Duration) fairness {
	tb.Helper()
	s := serve(tb)
	o := owner(tb, s, 2)
	a, b := device(tb, o, "principal a", 1), device(tb, o, "principal b", flooders)
	publish(tb, o, read(tb, countWasm), fmt.Sprintf(smallContract, "vowels"))
	publish(tb, o, read(tb, loopWasm), fmt.Sprintf(spinContract, timeout.Milliseconds()))
	small := invoker(tb, a, "vowels.count_vowels", smallInput)
	spin := invoker(tb, b, "spin.run", map[string]any{})

	var f fairness
	f.idle = loadtest.Run(context.Background(), 1, n, small)

	ctx, stop := context.WithCancel(context.Background())
	var ended atomic.Int64
	steady := make(chan struct{})
	flood := make(chan loadtest.Result, 1)
	go func() {
		flood <- loadtest.Run(ctx, flooders, -1, func(ctx context.Context, i int) error {
			err := spin(ctx, i)
			if ended.Add(1) == int64(flooders) {
				close(steady)
			}
			return err
		})
	}()
	<-steady
	f.floodEnded = int(ended.Load())
	start := time.Now()
	for i := 0; i < n && time.Since(start) < floodFor; i++ {
		f.flooded.Add(loadtest.Run(context.Background(), 1, 1, small))
	}
	stop()
	f.flood = <-flood
	return f
}

// checkFlood fails unless every looping call ended as a looping call may:
// at its timeout (deadline_exceeded), refused by admission
// (resource_exhausted), or cut by the flood's end (canceled).
func checkFlood(tb testing.TB, f fairness) {
	tb.Helper()
	var counted int
	for code, n := range f.flood.Failed {
		switch code {
		case connect.CodeDeadlineExceeded, connect.CodeResourceExhausted, connect.CodeCanceled:
			counted += n
		default:
			tb.Errorf("a looping call ended %v (%d times)", code, n)
		}
	}
	if f.flood.OK() != 0 || counted != f.flood.Calls() || f.flood.Calls() < f.floodEnded {
		tb.Errorf("flood: %v, %d ended before measuring", f.flood, f.floodEnded)
	}
}

// TestLoadFairness runs scenario b briefly: every small call succeeds,
// idle and under the flood, and every looping call ends at its timeout,
// refused, or cut at the end.
func TestLoadFairness(t *testing.T) {
	const n = 3
	f := fairScenario(t, n, 2, 200*time.Millisecond, 10*time.Minute)
	mustAllOK(t, "idle", f.idle, n)
	mustAllOK(t, "under the flood", f.flooded, n)
	checkFlood(t, f)
}

// BenchmarkExternalFairness: principal A's small call, one at a time,
// while principal B keeps 16 looping calls (1 s timeout each) in flight,
// against the same call on the idle server in the same run. b.N is A's
// calls of each kind; under the flood, measuring stops after
// -loadtest.floodfor (default 1 min) even if fewer were made:
//
//	go test -run '^$' -bench ExternalFairness -benchtime 200x ./internal/loadtest
func BenchmarkExternalFairness(b *testing.B) {
	n := max(b.N, 20)
	f := fairScenario(b, n, *flagFlooders, time.Second, *flagFloodFor)
	mustAllOK(b, "idle", f.idle, n)
	mustAllOK(b, "under the flood", f.flooded, f.flooded.Calls())
	checkFlood(b, f)
	b.ReportMetric(0, "ns/op")
	report(b, "flooded-", f.flooded)
	report(b, "idle-", f.idle)
	b.ReportMetric(float64(f.flooded.OK()), "flooded-calls")
	b.ReportMetric(ms(f.flooded.Quantile(0.5))/ms(f.idle.Quantile(0.5)), "p50/idle")
	b.ReportMetric(ms(f.flooded.Quantile(0.99))/ms(f.idle.Quantile(0.99)), "p99/idle")
	b.Logf("flood: %v", f.flood)
}

// --- c) A thousand tools ---

type thousand struct {
	tools               int
	firstSweep          loadtest.Result // each tool's first call
	rotate, small       loadtest.Result // a rotation over every tool; the small server's one tool, interleaved
	first, warm         loadtest.Result // a fresh textkit build's first call after its approval; its second
	rssStart, rssLoaded uint64          // the big server after start; after publishing and every call
	rssIdle             uint64          // …after waiting for it to settle
	idleWait            time.Duration   // how long that took
	smallStart, smallAt uint64          // the small server after start; after its calls
}

// tiny is the i-th distinct build of count.wasm.
func tiny(count []byte, i int) []byte {
	return loadtest.WithCustomSection(count, "contractual-loadtest", fmt.Appendf(nil, "tiny-%04d", i))
}

// thousandScenario approves tools distinct small tools on one server and
// one on another (the small server), calls every tool once, then rotates
// over them sweeps times, each call to the tool called longest ago,
// interleaved call by call with the small server's tool; then approves
// builds fresh builds of textkit (3.2 MiB, never compiled before) one at a
// time and calls each at once after its approval, and again. It reads the
// servers' RSS after start, after the calls, and once the big server's is
// within 50 MB of its start (or idle has passed).
func thousandScenario(tb testing.TB, tools, sweeps, builds int, idle time.Duration) thousand {
	tb.Helper()
	ctx := context.Background()
	big, small := serve(tb), serve(tb)
	th := thousand{tools: tools}
	th.rssStart, th.smallStart = rss(tb, big), rss(tb, small)
	o, so := owner(tb, big, 4), owner(tb, small, 1)
	count := read(tb, countWasm)

	pub := loadtest.Run(ctx, 4, tools, func(ctx context.Context, i int) error {
		_, _, err := o.PublishApproved(ctx, tiny(count, i), fmt.Sprintf(smallContract, fmt.Sprintf("tiny-%04d", i)))
		return err
	})
	mustAllOK(tb, "publishing", pub, tools)
	publish(tb, so, tiny(count, 0), fmt.Sprintf(smallContract, "tiny-0000"))

	in := value(tb, smallInput)
	call := func(d *loadtest.Device, i int) loadtest.Result {
		req := &contractualv1.InvokeRequest{Tool: fmt.Sprintf("tiny-%04d.count_vowels", i), Input: in}
		return loadtest.Run(ctx, 1, 1, func(ctx context.Context, _ int) error {
			_, err := d.Tools.Invoke(ctx, req)
			return err
		})
	}
	for i := range tools {
		th.firstSweep.Add(call(o, i))
	}
	for i := range sweeps * tools {
		th.rotate.Add(call(o, i%tools))
		th.small.Add(call(so, 0))
	}

	textkit := read(tb, textkitWasm)
	slug := &contractualv1.InvokeRequest{Tool: "textkit.slugify", Input: value(tb, map[string]any{"text": "Hello, Contractual World!"})}
	invokeSlug := func(ctx context.Context, _ int) error {
		_, err := o.Tools.Invoke(ctx, slug)
		return err
	}
	for n := range builds {
		build := loadtest.WithCustomSection(textkit, "contractual-loadtest", fmt.Appendf(nil, "%d-%d", time.Now().UnixNano(), n))
		publish(tb, o, build, textkitContract(tb, n))
		th.first.Add(loadtest.Run(ctx, 1, 1, invokeSlug))
		th.warm.Add(loadtest.Run(ctx, 1, 1, invokeSlug))
	}

	th.rssLoaded, th.smallAt = rss(tb, big), rss(tb, small)
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for th.rssIdle = th.rssLoaded; th.rssIdle > th.rssStart+50e6 && time.Since(start) < idle; th.rssIdle = rss(tb, big) {
		<-tick.C
	}
	th.idleWait = time.Since(start)
	return th
}

func rss(tb testing.TB, s *loadtest.Server) uint64 {
	tb.Helper()
	n, err := s.RSS()
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestLoadThousandTools runs scenario c briefly, with a dozen tools: every
// call succeeds, each tool's once per sweep.
func TestLoadThousandTools(t *testing.T) {
	const tools, sweeps, builds = 12, 2, 1
	th := thousandScenario(t, tools, sweeps, builds, 0)
	mustAllOK(t, "first sweep", th.firstSweep, tools)
	mustAllOK(t, "rotation", th.rotate, sweeps*tools)
	mustAllOK(t, "small server", th.small, sweeps*tools)
	mustAllOK(t, "first call after approval", th.first, builds)
	mustAllOK(t, "second call", th.warm, builds)
	if th.rssStart == 0 || th.rssLoaded == 0 || th.smallStart == 0 || th.smallAt == 0 {
		t.Errorf("RSS not read: %+v", th)
	}
}

// BenchmarkExternalThousandTools: 1,000 approved small tools on one
// server (-loadtest.tools), each called once and then in rotation, so that
// every call is of the tool called longest ago, interleaved call by call
// with a small server's only tool (the baseline); the first call of a
// fresh 3.2 MiB Go tool right after its approval, against its second call;
// and the servers' RSS after start, after the calls, and once idle (up to
// -loadtest.idle). b.N is the rotation's calls (at least one sweep) and
// the fresh builds (at least 3):
//
//	go test -run '^$' -bench ExternalThousandTools -benchtime 2000x -timeout 30m ./internal/loadtest
func BenchmarkExternalThousandTools(b *testing.B) {
	tools := *flagTools
	sweeps := max(1, (b.N+tools-1)/tools)
	builds := max(3, min(b.N, 10))
	th := thousandScenario(b, tools, sweeps, builds, *flagIdle)
	mustAllOK(b, "first sweep", th.firstSweep, tools)
	mustAllOK(b, "rotation", th.rotate, sweeps*tools)
	mustAllOK(b, "small server", th.small, sweeps*tools)
	mustAllOK(b, "first call after approval", th.first, builds)
	mustAllOK(b, "second call", th.warm, builds)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(th.firstSweep.Quantile(0.99)), "first-sweep-p99-ms")
	b.ReportMetric(ms(th.rotate.Quantile(0.5)), "rotate-p50-ms")
	b.ReportMetric(ms(th.rotate.Quantile(0.99)), "rotate-p99-ms")
	b.ReportMetric(ms(th.small.Quantile(0.5)), "small-p50-ms")
	b.ReportMetric(ms(th.small.Quantile(0.99)), "small-p99-ms")
	b.ReportMetric(ms(th.rotate.Quantile(0.99))/ms(th.small.Quantile(0.99)), "p99/small")
	b.ReportMetric(ms(th.first.Quantile(0.5)), "approved-first-p50-ms")
	b.ReportMetric(ms(th.first.Quantile(1)), "approved-first-max-ms")
	b.ReportMetric(ms(th.warm.Quantile(0.5)), "approved-second-p50-ms")
	b.ReportMetric(mb(th.rssStart), "rss-start-MB")
	b.ReportMetric(mb(th.rssLoaded), "rss-loaded-MB")
	b.ReportMetric(mb(th.rssIdle), "rss-idle-MB")
	b.ReportMetric(th.idleWait.Seconds(), "idle-s")
	b.ReportMetric(mb(th.smallStart), "small-rss-start-MB")
	b.ReportMetric(mb(th.smallAt), "small-rss-loaded-MB")
}

// --- d) Memory per concurrent call ---

// guestPeak is the peak linear memory of textkit's slugify on input, as
// the sandbox measures it (`contractual run --json`).
func guestPeak(tb testing.TB, input string) uint64 {
	tb.Helper()
	cmd := exec.Command(binary(tb), "run", filepath.Join(repo, textkitWasm), "--contract", filepath.Join(repo, "tools/textkit/contract.yaml"),
		"--export", "slugify", "--input", input, "--json")
	cmd.Env = append(os.Environ(), "CONTRACTUAL_CACHE_DIR="+filepath.Join(binDir, "cache"))
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("contractual run: %v\n%s", err, out)
	}
	var rep struct {
		Peak uint64 `json:"peak_memory_bytes"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || rep.Peak == 0 {
		tb.Fatalf("contractual run --json: %v: %s", err, out)
	}
	return rep.Peak
}

// memoryScenario starts a server with textkit approved, calls it once,
// reads its RSS, then makes n calls at concurrency conc and reads its peak
// RSS over them.
func memoryScenario(tb testing.TB, conc, n int, input string) (r loadtest.Result, base, peak uint64) {
	tb.Helper()
	s := serve(tb)
	o := owner(tb, s, conc)
	publish(tb, o, read(tb, textkitWasm), textkitContract(tb, 0))
	var in map[string]any
	if err := json.Unmarshal([]byte(input), &in); err != nil {
		tb.Fatal(err)
	}
	call := invoker(tb, o, "textkit.slugify", in)
	mustAllOK(tb, "warm-up", loadtest.Run(context.Background(), 1, 1, call), 1)
	base = rss(tb, s)
	if err := s.ResetPeakRSS(); err != nil {
		tb.Fatal(err)
	}
	r = loadtest.Run(context.Background(), conc, n, call)
	peak, err := s.PeakRSS()
	if err != nil {
		tb.Fatal(err)
	}
	return r, base, peak
}

const slugInput = `{"text": "Hello, Contractual World!"}`

// TestLoadMemory runs scenario d briefly: every call succeeds, and the
// guest's peak memory and the server's peak RSS are read.
func TestLoadMemory(t *testing.T) {
	if guestPeak(t, slugInput) == 0 {
		t.Fatal("no guest peak")
	}
	r, base, peak := memoryScenario(t, 4, 8, slugInput)
	mustAllOK(t, "calls", r, 8)
	if base == 0 || peak < base {
		t.Errorf("RSS %d before, peak %d", base, peak)
	}
}

// BenchmarkExternalMemory: the server's RSS per concurrent call of a Go
// tool (textkit's slugify, 16 MiB limit) at concurrency 1, 8 and 32, each
// on a fresh server, against the guest's own peak linear memory: (peak
// RSS over the calls − RSS after one call) / concurrency. b.N is the calls
// (at least 20 per client):
//
//	go test -run '^$' -bench ExternalMemory -benchtime 640x ./internal/loadtest
func BenchmarkExternalMemory(b *testing.B) {
	guest := guestPeak(b, slugInput)
	for _, conc := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("c%d", conc), func(b *testing.B) {
			n := max(b.N, 20*conc)
			r, base, peak := memoryScenario(b, conc, n, slugInput)
			mustAllOK(b, "calls", r, n)
			perCall := float64(peak-min(base, peak)) / float64(conc)
			b.ReportMetric(0, "ns/op")
			report(b, "", r)
			b.ReportMetric(mb(base), "rss-base-MB")
			b.ReportMetric(mb(peak), "rss-peak-MB")
			b.ReportMetric(perCall/1e6, "rss-per-call-MB")
			b.ReportMetric(mb(guest), "guest-peak-MB")
			b.ReportMetric(perCall/float64(guest), "per-call/guest")
		})
	}
}
