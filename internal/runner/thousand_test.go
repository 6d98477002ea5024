package runner

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/runtime/sandbox"
)

// BenchmarkThousandTools runs a runner over a real policy with 1,000
// approved tools (distinct variants of count.wasm, 461 bytes), each figure
// next to its baseline from the same run:
//
//		go test -run '^$' -bench ThousandTools -benchtime 1x -timeout 30m ./internal/runner
//
//	  - warm-s: the start's background compile of every approved tool;
//	    idle-rss-MiB: the resident set it adds (per-tool-KiB per tool);
//	  - rotate-p50/p99-ms: an invoke (Evaluate + Execute, in process) of a
//	    tool last called 999 calls ago, against hot-p50/p99-ms, the same call
//	    of one tool called every other time; lru64-p99-ms is the rotation
//	    with the cache cut to 64 tiny modules, as it was before;
//	  - a 3.3 MB Go-built tool (textkit variants): first-call-ms, its first
//	    call once approval compiled it; raced-ms, its first call made at
//	    once after approval (it waits for the compile under way); cold-ms,
//	    its first call with nothing compiled (neither in memory nor on disk),
//	    what every first call cost without warming; warm-call-ms, a second
//	    call.
func BenchmarkThousandTools(b *testing.B) {
	const tools = 1000
	for b.Loop() {
		l := newLive(b)
		for i := range tools {
			d, _ := l.publish(fmt.Sprintf("t%d", i), i, "1.0.0")
			l.approve(d)
		}
		rss0 := rss()
		start := time.Now()
		l.start(Config{})
		l.synced()
		l.waitFor("every tool is warm", l.svc.follower.idle)
		b.ReportMetric(time.Since(start).Seconds(), "warm-s")
		if n := l.svc.modules.len(); n != tools {
			b.Fatalf("%d tools cached after warming, want %d", n, tools)
		}
		grown := rss() - rss0
		b.ReportMetric(float64(grown)/(1<<20), "idle-rss-MiB")
		b.ReportMetric(float64(grown)/tools/1024, "per-tool-KiB")

		call := func(name string) time.Duration {
			t0 := time.Now()
			if _, err := l.invoke(name); err != nil {
				b.Fatal(err)
			}
			return time.Since(t0)
		}
		var rotate, hot []time.Duration
		for round := range 2 {
			for i := range tools {
				d := call(fmt.Sprintf("t%d", (i+round*tools/2)%tools))
				if round > 0 {
					rotate = append(rotate, d)
					hot = append(hot, call("t0"))
				}
			}
		}
		b.ReportMetric(ms(pct(rotate, 50)), "rotate-p50-ms")
		b.ReportMetric(ms(pct(rotate, 99)), "rotate-p99-ms")
		b.ReportMetric(ms(pct(hot, 50)), "hot-p50-ms")
		b.ReportMetric(ms(pct(hot, 99)), "hot-p99-ms")

		// The same rotation with room for 64 tiny modules only.
		l.stop()
		l.start(Config{ModuleCacheBytes: 64 * sandbox.Footprint(variant(hostile(b, "count.wasm"), 0))})
		l.synced()
		l.waitFor("warming is done", l.svc.follower.idle)
		var lru64 []time.Duration
		for i := range tools {
			lru64 = append(lru64, call(fmt.Sprintf("t%d", i)))
		}
		b.ReportMetric(ms(pct(lru64, 99)), "lru64-p99-ms")
		l.stop()

		// A Go-built tool's first call after approval.
		l.start(Config{})
		l.synced()
		l.waitFor("warming is done", l.svc.follower.idle)
		textkit := readFile(b, "tools/textkit/textkit.wasm")
		publishGo := func(name string, i int) string {
			wasm := variant(textkit, i)
			lines := strings.Split(string(readFile(b, "tools/textkit/contract.yaml")), "\n")
			for i, line := range lines {
				switch {
				case strings.HasPrefix(line, "module: "):
					lines[i] = "module: " + contract.ModuleDigest(wasm)
				case strings.HasPrefix(line, "name: "):
					lines[i] = "name: " + name
				}
			}
			ct := strings.Join(lines, "\n")
			resp, err := l.policy.Publish(asOwner, &contractualv1.PublishRequest{Module: wasm, Contract: []byte(ct)})
			if err != nil {
				b.Fatal(err)
			}
			return resp.GetRecord().GetDigest()
		}
		goCall := func(name string) time.Duration {
			ev, err := l.policy.Evaluate(context.Background(), &contractualv1.EvaluateRequest{
				Tool: name + ".slugify", Input: []byte(`{"text":"Hello, World"}`), Principal: "device:phone",
			})
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			if _, err := l.svc.Execute(context.Background(), &contractualv1.ExecuteRequest{Decision: ev.GetSigned(), Input: ev.GetCanonicalInput()}); err != nil {
				b.Fatal(err)
			}
			return time.Since(t0)
		}
		d := publishGo("gowarm", 1)
		l.approve(d)
		l.synced()
		l.waitFor("the Go tool is warm", func() bool { return l.cached(d) })
		b.ReportMetric(ms(goCall("gowarm")), "first-call-ms")
		b.ReportMetric(ms(goCall("gowarm")), "warm-call-ms")

		d = publishGo("goraced", 2)
		l.approve(d)
		b.ReportMetric(ms(goCall("goraced")), "raced-ms")

		d = publishGo("gocold", 3)
		l.approve(d)
		l.synced()
		l.waitFor("the Go tool is warm", func() bool { return l.cached(d) })
		l.svc.modules.drop(d)
		wasm := variant(textkit, 3)
		if _, err := l.engine.Prune(func(m string) bool { return m != contract.ModuleDigest(wasm) }); err != nil {
			b.Fatal(err)
		}
		if l.onDisk(wasm) {
			b.Fatal("the cold tool's code is still on disk")
		}
		b.ReportMetric(ms(goCall("gocold")), "cold-ms")
	}
}

// pct returns the p-th percentile of d.
func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)*p/100, len(s)-1)]
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rss returns the process's resident set, in bytes, after a garbage
// collection that returns free memory to the OS.
func rss() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, pages int64
	fmt.Sscan(string(statm), &size, &pages)
	return pages * int64(os.Getpagesize())
}
