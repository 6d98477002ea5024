package worker

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// BenchmarkRuns measures runs per second of a one-step job (ghstars
// against the loopback sink) through 1 and 4 workers, each run enqueued,
// claimed, decided, executed and recorded with its audit events, against
// the same call made directly (policy Evaluate, then runner Execute) in
// the same process.
//
//	go test ./internal/worker -run '^$' -bench Runs -benchtime 200x
func BenchmarkRuns(b *testing.B) {
	dir := b.TempDir()
	sk := newSink(b)
	st := newStack(b, dir, sk.egress())
	rec := st.approveJob(b, fmt.Sprintf(`name: bench
trigger: {cron: {expression: "0 2 * * *", time_zone: UTC}}
steps:
  - {id: one, tool: ghstars.repo_stars, contract: %s, input: {owner: o, repo: one}}
budgets: {runs_per_day: 1440}
`, ghstarsDigest(b)))
	ctx := context.Background()
	n := 0
	call := func() {
		n++
		ev, err := st.policy.Evaluate(ctx, &contractualv1.EvaluateRequest{
			Tool: "ghstars.repo_stars", Input: []byte(`{"owner":"o","repo":"one"}`), Principal: "job:bench", RunId: fmt.Sprint("direct-", n),
		})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.runner.Execute(ctx, &contractualv1.ExecuteRequest{Decision: ev.GetSigned(), Input: ev.GetCanonicalInput()}); err != nil {
			b.Fatal(err)
		}
	}
	call() // compiles the module

	b.Run("execute", func(b *testing.B) {
		for b.Loop() {
			call()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
	for _, workers := range []int{1, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			finished := make(chan string, b.N)
			s := openWorker(b, filepath.Join(dir, fmt.Sprint("w", workers)), st, Config{Workers: workers, Poll: time.Minute})
			s.testHookFinished = func(run string) { finished <- run }
			base := time.Now()
			b.ResetTimer()
			for i := range b.N {
				enqueue(b, s, rec, base.Add(time.Duration(i)*time.Second), "")
			}
			s.start()
			for range b.N {
				<-finished
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
			s.Close(ctx)
		})
	}
}
