package runner

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
	"github.com/contractual/contractual/runtime/sandbox"
)

// TestIdempotencyKeyOfJobCall: a decision with a run id makes the call's
// HTTP request carry Idempotency-Key, derived from the run and the action
// (tool and input hash): the same for a new decision of the same call, and
// another for another input or run. A call without a run id sends none.
func TestIdempotencyKeyOfJobCall(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	api := egresstest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"full_name": "o/r", "stargazers_count": 1, "forks_count": 2})
	}), "api.github.com")
	defer api.Close()
	dialer, roots := egresstest.New(map[string]*httptest.Server{"api.github.com": api})
	e, err := sandbox.NewEngine(sandbox.Options{Egress: egress.Config{Dialer: dialer, RootCAs: roots}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	f := newFixtureOn(t, e, Config{})
	ct := f.publish(readFile(t, "tools/ghstars/ghstars.wasm"), string(readFile(t, "tools/ghstars/contract.yaml")))

	in1, in2 := `{"owner":"o","repo":"one"}`, `{"owner":"o","repo":"two"}`
	run := func(input, runID string) {
		t.Helper()
		d := f.decision(ct, "repo_stars", input, func(d *contractualv1.Decision) { d.Principal, d.RunId = "job:nightly", runID })
		if _, err := f.svc.Execute(context.Background(), f.request(d, input)); err != nil {
			t.Fatal(err)
		}
	}
	run(in1, "run-a")
	run(in1, "run-a") // a retry: a new decision of the same call
	run(in2, "run-a")
	run(in1, "run-b")
	run(in1, "")

	hash := func(in string) string {
		c, _ := decision.Canonical([]byte(in))
		return decision.Hash(c)
	}
	key := func(run, in string) string {
		return decision.RequestKey(decision.ActionKey(run, "", "ghstars.repo_stars", hash(in)), 1)
	}
	want := []string{key("run-a", in1), key("run-a", in1), key("run-a", in2), key("run-b", in1), ""}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != len(want) {
		t.Fatalf("the API saw %d requests, want %d", len(keys), len(want))
	}
	for i := range want {
		if keys[i] != want[i] {
			t.Errorf("request %d: Idempotency-Key %q, want %q", i, keys[i], want[i])
		}
	}
	if keys[0] == keys[2] || keys[0] == keys[3] || len(keys[0]) < len("run-a.")+32 {
		t.Errorf("keys do not tell calls apart: %q", keys)
	}
}
