package egress_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
)

// TestIdempotencyKey: a session with an IdempotencyKey sends each request
// with the key of its sequence number, on every hop of a redirect, the
// same keys again in a new session of the same call; the module cannot set
// the header; a session without one sends none and lets the module set it.
func TestIdempotencyKey(t *testing.T) {
	w := newWorld(t, func(rw http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/moved") {
			http.Redirect(rw, r, "/v1/there", http.StatusFound)
			return
		}
		ok(rw, r)
	})
	rule := egress.Rule{Scheme: "https", Host: "api.example.com", PathPrefix: "/v1/", Methods: []string{"GET", "POST"}}
	key := func(n int) string { return fmt.Sprintf("run-1.action.%d", n) }
	call := func() {
		cfg := w.cfg
		cfg.Rules, cfg.IdempotencyKey = []egress.Rule{rule}, key
		s := w.sessionCfg(cfg)
		for _, u := range []string{"https://api.example.com/v1/a", "https://api.example.com/v1/moved"} {
			if _, err := s.Do(context.Background(), egress.Request{Method: "POST", URL: u}); err != nil {
				t.Fatal(err)
			}
		}
		_, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/v1/b", Header: http.Header{"idempotency-key": {"mine"}}})
		if !errs.Is(err, errs.PermissionDenied) || !strings.Contains(err.Error(), "Idempotency-Key") {
			t.Fatalf("a module setting Idempotency-Key: %v, want PermissionDenied", err)
		}
	}
	call()
	call() // the same call again: the same keys
	var got []string
	for _, r := range w.requests() {
		got = append(got, r.URL.Path+"="+r.Header.Get("Idempotency-Key"))
	}
	want := "[/v1/a=run-1.action.1 /v1/moved=run-1.action.2 /v1/there=run-1.action.2 " +
		"/v1/a=run-1.action.1 /v1/moved=run-1.action.2 /v1/there=run-1.action.2]"
	if fmt.Sprint(got) != want {
		t.Fatalf("the server saw %v, want %s", got, want)
	}

	plain := newWorld(t, ok)
	s := plain.session(rule)
	if _, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/v1/c", Header: http.Header{"Idempotency-Key": {"mine"}}}); err != nil {
		t.Fatal(err)
	}
	if r := plain.requests(); len(r) != 1 || r[0].Header.Get("Idempotency-Key") != "mine" {
		t.Fatalf("without a key the module's header goes as it is: %v", r)
	}
}
