package loadtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
)

// Result is the outcome of a run of calls.
type Result struct {
	// Latencies are the durations of the calls that succeeded.
	Latencies []time.Duration
	// Failed counts the calls that failed, by Connect code (a call that
	// failed with another error than a Connect error or its context's end
	// counts as unknown).
	Failed map[connect.Code]int
	// Elapsed is the run's wall time, from its first call's start to its
	// last call's end.
	Elapsed time.Duration
}

// OK is the number of calls that succeeded.
func (r Result) OK() int { return len(r.Latencies) }

// Calls is the number of calls made.
func (r Result) Calls() int {
	n := r.OK()
	for _, c := range r.Failed {
		n += c
	}
	return n
}

// Quantile is the q-quantile (0 < q ≤ 1, nearest rank) of the successful
// calls' latencies, or 0 if none succeeded.
func (r Result) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(r.Latencies))
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Throughput is the successful calls per second of wall time.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK()) / r.Elapsed.Seconds()
}

// Add merges s into r (their elapsed times add up: runs one after the
// other).
func (r *Result) Add(s Result) {
	r.Latencies = append(r.Latencies, s.Latencies...)
	if len(s.Failed) > 0 && r.Failed == nil {
		r.Failed = map[connect.Code]int{}
	}
	for c, n := range s.Failed {
		r.Failed[c] += n
	}
	r.Elapsed += s.Elapsed
}

// String summarizes r, e.g. "100 calls, 99 ok, 1 resource_exhausted, p50
// 1.2ms, p99 3.4ms".
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d calls, %d ok", r.Calls(), r.OK())
	for _, c := range slices.Sorted(maps.Keys(r.Failed)) {
		fmt.Fprintf(&b, ", %d %v", r.Failed[c], c)
	}
	if r.OK() > 0 {
		fmt.Fprintf(&b, ", p50 %v, p99 %v", r.Quantile(0.5), r.Quantile(0.99))
	}
	return b.String()
}

// Run makes n calls (n < 0: until ctx ends) from conc goroutines at once,
// a closed loop: each goroutine makes its next call when its last one has
// returned, so conc calls are in flight throughout. call gets the call's
// index, 0 to n-1 in the order the calls start. Run returns when every
// call has returned; once ctx has ended it starts no new call.
func Run(ctx context.Context, conc, n int, call func(ctx context.Context, i int) error) Result {
	if n >= 0 {
		conc = min(conc, n)
	}
	var (
		next    atomic.Int64
		mu      sync.Mutex
		res     = Result{Failed: map[connect.Code]int{}}
		wg      sync.WaitGroup
		started = time.Now()
	)
	for range conc {
		wg.Go(func() {
			var lat []time.Duration
			failed := map[connect.Code]int{}
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if n >= 0 && i >= n {
					break
				}
				t0 := time.Now()
				if err := call(ctx, i); err != nil {
					failed[code(err)]++
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			res.Add(Result{Latencies: lat, Failed: failed})
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(started)
	return res
}

// code is err's Connect code; a context's end that is not a Connect
// error counts as canceled or deadline_exceeded.
func code(err error) connect.Code {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code()
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	}
	return connect.CodeUnknown
}

// Interleave makes n calls of a and n of b, from conc goroutines at once,
// in alternating runs (a run of a, then one of b, rounds times), so that
// whatever else the machine does falls on both alike; it returns a's and
// b's merged results.
func Interleave(ctx context.Context, conc, n, rounds int, a, b func(ctx context.Context, i int) error) (ra, rb Result) {
	rounds = max(1, min(rounds, n/max(conc, 1)))
	for k := range rounds {
		m := n / rounds
		if k < n%rounds {
			m++
		}
		ra.Add(Run(ctx, conc, m, a))
		rb.Add(Run(ctx, conc, m, b))
	}
	return ra, rb
}
