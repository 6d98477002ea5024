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

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/loadtest"
)

// The scenarios' sizes in a benchmark run; the TestLoad… tests use small
// ones of their own.
var (
	flagTools    = flag.Int("loadtest.tools", 1000, "approved tools in BenchmarkExternalThousandTools")
	flagFlooders = flag.Int("loadtest.flooders", 16, "concurrent looping calls in BenchmarkExternalFairness")
	flagFloodFor = flag.Duration("loadtest.floodfor", time.Minute, "the longest BenchmarkExternalFairness measures under the flood")
	flagBuilds   = flag.Int("loadtest.builds", 5, "the most fresh builds BenchmarkExternalThousandTools/approval approves in one run")
	flagReview   = flag.Duration("loadtest.review", 5*time.Second, "the owner's review in BenchmarkExternalThousandTools/approval: the time between a build's publication and its approval")
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

// smallContract is count.wasm's contract, formatted with its name; the
// module's digest is left for PublishApproved to fill in.
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

// spinContract is loop.wasm's contract, formatted with its timeout_ms.
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
	return d.Invoker(tool, value(tb, input))
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

// invokeScenario makes n invocations of the small tool and n bare calls at
// concurrency conc, interleaved in rounds, and reads the server's peak RSS
// over them.
func invokeScenario(tb testing.TB, s *loadtest.Server, o *loadtest.Device, conc, n int) (invoke, bare loadtest.Result, peak uint64) {
	tb.Helper()
	if err := s.ResetPeakRSS(); err != nil {
		tb.Fatal(err)
	}
	bare, invoke = loadtest.Interleave(context.Background(), conc, n, 10, o.BareCall, invoker(tb, o, "vowels.count_vowels", smallInput))
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

// fairSetup starts a server with the small tool and the looping one
// (timeout each) approved, and returns principal A's call of the small
// tool and principal B's looping call, each principal a device of its own.
func fairSetup(tb testing.TB, flooders int, timeout time.Duration) (small, spin func(context.Context, int) error) {
	tb.Helper()
	s := serve(tb)
	o := owner(tb, s, 2)
	a, b := device(tb, o, "principal a", 1), device(tb, o, "principal b", flooders)
	publish(tb, o, read(tb, countWasm), fmt.Sprintf(smallContract, "vowels"))
	publish(tb, o, read(tb, loopWasm), fmt.Sprintf(spinContract, timeout.Milliseconds()))
	return invoker(tb, a, "vowels.count_vowels", smallInput), invoker(tb, b, "spin.run", map[string]any{})
}

// flood keeps calls of spin in flight until Stop.
type flood struct {
	flooders int
	stop     context.CancelFunc
	done     chan loadtest.Result
}

// startFlood starts flooders calls of spin at once, each followed by
// another as soon as it ends, and returns once flooders calls have ended:
// the flood is then in its steady state rather than starting.
func startFlood(flooders int, spin func(context.Context, int) error) *flood {
	ctx, stop := context.WithCancel(context.Background())
	f := &flood{flooders: flooders, stop: stop, done: make(chan loadtest.Result, 1)}
	var ended atomic.Int64
	steady := make(chan struct{})
	go func() {
		f.done <- loadtest.Run(ctx, flooders, -1, func(ctx context.Context, i int) error {
			err := spin(ctx, i)
			if ended.Add(1) == int64(flooders) {
				close(steady)
			}
			return err
		})
	}()
	<-steady
	return f
}

// Stop ends the flood and checks that every looping call ended as a
// looping call may: at its timeout (deadline_exceeded), refused by
// admission (resource_exhausted), or cut by the flood's end (canceled).
func (f *flood) Stop(tb testing.TB) loadtest.Result {
	tb.Helper()
	f.stop()
	r := <-f.done
	var counted int
	for code, n := range r.Failed {
		switch code {
		case connect.CodeDeadlineExceeded, connect.CodeResourceExhausted, connect.CodeCanceled:
			counted += n
		default:
			tb.Errorf("a looping call ended %v (%d times)", code, n)
		}
	}
	if r.OK() != 0 || counted != r.Calls() || r.Calls() < f.flooders {
		tb.Errorf("flood: %v; want at least %d calls, none ok", r, f.flooders)
	}
	return r
}

// underFlood makes up to n calls of small, one at a time, stopping early
// once limit has passed.
func underFlood(n int, limit time.Duration, small func(context.Context, int) error) loadtest.Result {
	var r loadtest.Result
	start := time.Now()
	for i := 0; i < n && time.Since(start) < limit; i++ {
		r.Add(loadtest.Run(context.Background(), 1, 1, small))
	}
	return r
}

// TestLoadFairness runs scenario b briefly: every small call succeeds,
// idle and under the flood, and every looping call ends at its timeout,
// refused, or cut at the end.
func TestLoadFairness(t *testing.T) {
	const n = 3
	small, spin := fairSetup(t, 2, 200*time.Millisecond)
	mustAllOK(t, "idle", loadtest.Run(context.Background(), 1, n, small), n)
	f := startFlood(2, spin)
	mustAllOK(t, "under the flood", underFlood(n, time.Hour, small), n)
	f.Stop(t)
}

// BenchmarkExternalFairness: principal A's small call, one at a time, on
// the idle server ("idle"), then while principal B keeps 16 looping calls
// (-loadtest.flooders, 1 s timeout each) in flight ("flooded", with the
// ratios to idle). b.N is A's calls of each; under the flood, measuring
// stops after -loadtest.floodfor (default 1 min) even if fewer were made:
//
//	go test -run '^$' -bench ExternalFairness -benchtime 200x ./internal/loadtest
func BenchmarkExternalFairness(b *testing.B) {
	small, spin := fairSetup(b, *flagFlooders, time.Second)
	var idle loadtest.Result
	b.Run("idle", func(b *testing.B) {
		idle = loadtest.Run(context.Background(), 1, b.N, small)
		mustAllOK(b, "idle", idle, b.N)
		b.ReportMetric(0, "ns/op")
		report(b, "", idle)
	})
	f := startFlood(*flagFlooders, spin)
	b.Run("flooded", func(b *testing.B) {
		r := underFlood(b.N, *flagFloodFor, small)
		mustAllOK(b, "under the flood", r, r.Calls())
		b.ReportMetric(0, "ns/op")
		report(b, "", r)
		b.ReportMetric(float64(r.OK()), "calls")
		b.ReportMetric(ms(r.Quantile(0.5))/ms(idle.Quantile(0.5)), "p50/idle")
		b.ReportMetric(ms(r.Quantile(0.99))/ms(idle.Quantile(0.99)), "p99/idle")
	})
	b.Logf("flood: %v", f.Stop(b))
}

// --- c) A thousand tools ---

// thousand is a server with many small tools approved and a small server
// with one, each with its owner.
type thousand struct {
	big, small *loadtest.Server
	o, so      *loadtest.Device
	tools      int
	in         *structpb.Value
	next       int // the next tool of the rotation
	builds     int // the fresh textkit builds approved so far

	rssStart, smallStart uint64          // the servers' RSS after start
	firstSweep           loadtest.Result // each tool's first call
}

// tiny is the i-th distinct build of count.wasm.
func tiny(count []byte, i int) []byte {
	return loadtest.WithCustomSection(count, "contractual-loadtest", fmt.Appendf(nil, "tiny-%04d", i))
}

// thousandSetup approves tools distinct small tools (tiny-0000, …) on one
// server and tiny-0000 alone on another, reads their RSS after start, and
// calls every tool once.
func thousandSetup(tb testing.TB, tools int) *thousand {
	tb.Helper()
	th := &thousand{big: serve(tb), small: serve(tb), tools: tools, in: value(tb, smallInput)}
	th.rssStart, th.smallStart = rss(tb, th.big), rss(tb, th.small)
	th.o, th.so = owner(tb, th.big, 4), owner(tb, th.small, 1)
	count := read(tb, countWasm)
	pub := loadtest.Run(context.Background(), 4, tools, func(ctx context.Context, i int) error {
		_, _, err := th.o.PublishApproved(ctx, tiny(count, i), fmt.Sprintf(smallContract, fmt.Sprintf("tiny-%04d", i)))
		return err
	})
	mustAllOK(tb, "publishing", pub, tools)
	publish(tb, th.so, tiny(count, 0), fmt.Sprintf(smallContract, "tiny-0000"))
	for i := range tools {
		th.firstSweep.Add(th.call(th.o, i))
	}
	mustAllOK(tb, "first sweep", th.firstSweep, tools)
	return th
}

// call calls tool i as d.
func (th *thousand) call(d *loadtest.Device, i int) loadtest.Result {
	req := &contractualv1.InvokeRequest{Tool: fmt.Sprintf("tiny-%04d.count_vowels", i), Input: th.in}
	return loadtest.Run(context.Background(), 1, 1, func(ctx context.Context, _ int) error {
		_, err := d.Tools.Invoke(ctx, req)
		return err
	})
}

// rotate makes n calls on the big server, each of the tool called longest
// ago, interleaved call by call with n calls of the small server's tool.
func (th *thousand) rotate(n int) (rotation, small loadtest.Result) {
	for range n {
		rotation.Add(th.call(th.o, th.next))
		small.Add(th.call(th.so, 0))
		th.next = (th.next + 1) % th.tools
	}
	return rotation, small
}

// fresh approves n builds of textkit (3.2 MiB) that were never compiled
// before, one at a time, and calls each as soon as it is approved, then
// again.
func (th *thousand) fresh(tb testing.TB, n int, review time.Duration) (first, second loadtest.Result) {
	tb.Helper()
	textkit := read(tb, textkitWasm)
	slug := invoker(tb, th.o, "textkit.slugify", map[string]any{"text": "Hello, Contractual World!"})
	for range n {
		build := loadtest.WithCustomSection(textkit, "contractual-loadtest", fmt.Appendf(nil, "%d-%d", time.Now().UnixNano(), th.builds))
		pub, err := th.o.Policy.Publish(context.Background(), &contractualv1.PublishRequest{
			Module:           build,
			Contract:         fmt.Appendf(nil, textkitContract(tb, th.builds), contract.ModuleDigest(build)),
			ContractFilename: "contract.yaml",
		})
		if err != nil {
			tb.Fatal(err)
		}
		time.Sleep(review) // the owner reads the permissions card
		if _, err := th.o.Policy.Approve(context.Background(), &contractualv1.ApproveRequest{Digest: pub.GetRecord().GetDigest(), Reason: "load test"}); err != nil {
			tb.Fatal(err)
		}
		th.builds++
		first.Add(loadtest.Run(context.Background(), 1, 1, slug))
		second.Add(loadtest.Run(context.Background(), 1, 1, slug))
	}
	return first, second
}

// settle waits, up to limit, for the big server's RSS to return to within
// 50 MB of its RSS after start, reading it every second; it returns the
// last reading and how long it waited.
func (th *thousand) settle(tb testing.TB, limit time.Duration) (uint64, time.Duration) {
	return settle(tb, th.big, th.rssStart, limit)
}

// settle waits, up to limit, for s's RSS to return to within 50 MB of
// base, reading it every second; it returns the last reading and how long
// it waited.
func settle(tb testing.TB, s *loadtest.Server, base uint64, limit time.Duration) (uint64, time.Duration) {
	tb.Helper()
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	n := rss(tb, s)
	for n > base+50e6 && time.Since(start) < limit {
		<-tick.C
		n = rss(tb, s)
	}
	return n, time.Since(start)
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
// call succeeds, and the servers' RSS is read.
func TestLoadThousandTools(t *testing.T) {
	const tools = 12
	th := thousandSetup(t, tools)
	rotation, small := th.rotate(2 * tools)
	mustAllOK(t, "rotation", rotation, 2*tools)
	mustAllOK(t, "small server", small, 2*tools)
	first, second := th.fresh(t, 1, 0)
	mustAllOK(t, "first call after approval", first, 1)
	mustAllOK(t, "second call", second, 1)
	if idle, _ := th.settle(t, 0); th.rssStart == 0 || th.smallStart == 0 || idle == 0 {
		t.Errorf("RSS not read: %d, %d, %d", th.rssStart, th.smallStart, idle)
	}
}

// BenchmarkExternalThousandTools: 1,000 approved small tools on one server
// (-loadtest.tools), each called once at set-up, then:
//
//   - rotate: b.N calls, each of the tool called longest ago (not called
//     since the 999 others), interleaved call by call with a small
//     server's only tool (the baseline, small-…);
//   - approval: b.N fresh builds (at most -loadtest.builds, default 5) of
//     a 3.2 MiB Go tool (textkit, never compiled before), each approved
//     -loadtest.review (default 5 s, the owner's review) after its
//     publication and called as soon as its approval returned, against its
//     second call;
//   - rss: both servers' RSS after start and after those calls, and the big
//     one's once it is within 50 MB of its start (waiting up to
//     -loadtest.idle, default 30 s).
//
// Run it as:
//
//	go test -run '^$' -bench ExternalThousandTools -benchtime 2000x -timeout 30m ./internal/loadtest
func BenchmarkExternalThousandTools(b *testing.B) {
	th := thousandSetup(b, *flagTools)
	b.Run("rotate", func(b *testing.B) {
		rotation, small := th.rotate(b.N)
		mustAllOK(b, "rotation", rotation, b.N)
		mustAllOK(b, "small server", small, b.N)
		b.ReportMetric(0, "ns/op")
		report(b, "", rotation)
		report(b, "small-", small)
		b.ReportMetric(ms(rotation.Quantile(0.99))/ms(small.Quantile(0.99)), "p99/small")
		b.ReportMetric(ms(th.firstSweep.Quantile(0.99)), "first-sweep-p99-ms")
	})
	b.Run("approval", func(b *testing.B) {
		n := min(b.N, *flagBuilds)
		first, second := th.fresh(b, n, *flagReview)
		mustAllOK(b, "first call after approval", first, n)
		mustAllOK(b, "second call", second, n)
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(ms(first.Quantile(0.5)), "first-p50-ms")
		b.ReportMetric(ms(first.Quantile(1)), "first-max-ms")
		b.ReportMetric(ms(second.Quantile(0.5)), "second-p50-ms")
		b.ReportMetric(ms(first.Quantile(0.5))/ms(second.Quantile(0.5)), "first/second")
	})
	b.Run("rss", func(b *testing.B) {
		loaded, smallLoaded := rss(b, th.big), rss(b, th.small)
		idle, waited := th.settle(b, *flagIdle)
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(mb(th.rssStart), "start-MB")
		b.ReportMetric(mb(loaded), "loaded-MB")
		b.ReportMetric(mb(idle), "idle-MB")
		b.ReportMetric(waited.Seconds(), "idle-s")
		b.ReportMetric(mb(th.smallStart), "small-start-MB")
		b.ReportMetric(mb(smallLoaded), "small-loaded-MB")
	})
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

// memorySetup starts a server, reads its RSS (the base) and resets its
// peak RSS, then approves textkit and calls it once (compiling it); it
// returns textkit's call.
func memorySetup(tb testing.TB, conc int, input string) (s *loadtest.Server, call func(context.Context, int) error, base uint64) {
	tb.Helper()
	s = serve(tb)
	o := owner(tb, s, conc)
	base = rss(tb, s)
	if err := s.ResetPeakRSS(); err != nil {
		tb.Fatal(err)
	}
	publish(tb, o, read(tb, textkitWasm), textkitContract(tb, 0))
	var in map[string]any
	if err := json.Unmarshal([]byte(input), &in); err != nil {
		tb.Fatal(err)
	}
	call = invoker(tb, o, "textkit.slugify", in)
	mustAllOK(tb, "warm-up", loadtest.Run(context.Background(), 1, 1, call), 1)
	return s, call, base
}

func peakRSS(tb testing.TB, s *loadtest.Server) uint64 {
	tb.Helper()
	n, err := s.PeakRSS()
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

const slugInput = `{"text": "Hello, Contractual World!"}`

// TestLoadMemory runs scenario d briefly: every call succeeds, and the
// guest's peak memory and the server's peak RSS are read.
func TestLoadMemory(t *testing.T) {
	if guestPeak(t, slugInput) == 0 {
		t.Fatal("no guest peak")
	}
	s, call, base := memorySetup(t, 4, slugInput)
	mustAllOK(t, "calls", loadtest.Run(context.Background(), 4, 8, call), 8)
	if peak := peakRSS(t, s); base == 0 || peak < base {
		t.Errorf("RSS %d before, peak %d", base, peak)
	}
}

// BenchmarkExternalMemory: the server's RSS per concurrent call of a Go
// tool (textkit's slugify, 16 MiB limit) at concurrency 1, 8 and 32, each
// on a fresh server, against the guest's own peak linear memory. growth is
// the peak RSS over the calls less the RSS after start (so it holds the
// compiled module and the server's other fixed costs), per-call is growth
// divided by the concurrency, and marginal (at c8 and c32) is what each
// concurrent call beyond the first adds: (growth − growth at c1) / (c − 1).
// b.N is the calls (at least 20 per client):
//
//	go test -run '^$' -bench ExternalMemory -benchtime 640x ./internal/loadtest
func BenchmarkExternalMemory(b *testing.B) {
	guest := guestPeak(b, slugInput)
	var growth1 float64
	for _, conc := range []int{1, 8, 32} {
		// One server for every run of this concurrency: the sub-benchmark's
		// own cleanups would stop it after each run.
		s, call, base := memorySetup(b, conc, slugInput)
		b.Run(fmt.Sprintf("c%d", conc), func(b *testing.B) {
			n := max(b.N, 20*conc)
			r := loadtest.Run(context.Background(), conc, n, call)
			mustAllOK(b, "calls", r, n)
			peak := peakRSS(b, s)
			growth := float64(peak - min(base, peak))
			b.ReportMetric(0, "ns/op")
			report(b, "", r)
			b.ReportMetric(mb(base), "rss-start-MB")
			b.ReportMetric(mb(peak), "rss-peak-MB")
			b.ReportMetric(growth/1e6, "growth-MB")
			b.ReportMetric(growth/float64(conc)/1e6, "per-call-MB")
			b.ReportMetric(mb(guest), "guest-peak-MB")
			if conc == 1 {
				growth1 = growth
			} else if growth1 > 0 {
				marginal := (growth - growth1) / float64(conc-1)
				b.ReportMetric(marginal/1e6, "marginal-MB")
				b.ReportMetric(marginal/float64(guest), "marginal/guest")
			}
			idle, waited := settle(b, s, base, *flagIdle)
			b.ReportMetric(float64(int64(idle)-int64(base))/1e6, "idle-over-start-MB")
			b.ReportMetric(waited.Seconds(), "idle-s")
		})
	}
}
