package policy

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
)

// TestEvaluateRefused sends calls that cannot be decided: each gets an
// error of the right kind that says what is wrong, no decision, no store
// change, and one call.refused event.
func TestEvaluateRefused(t *testing.T) {
	f := newFixture(t)
	wasm, ct := textkit(t)
	f.approve(f.publish(wasm, ct).GetRecord().GetDigest())
	count := hostile(t, "count")
	f.publish(count, counter(count, "1.0.0", "low", "")) // pending only

	tests := []struct {
		name, tool, input, who string
		kind                   errs.Kind
		msgs                   []string
	}{
		{"no input", "textkit.slugify", ``, "device:phone", errs.Invalid, []string{"input is required"}},
		{"malformed JSON", "textkit.slugify", `{"text": "a"`, "device:phone", errs.Invalid, []string{"input is not valid JSON"}},
		{"trailing data", "textkit.slugify", `{"text": "a"} {}`, "device:phone", errs.Invalid, []string{"input is not valid JSON: data after the value"}},
		{"duplicate key", "textkit.slugify", `{"text": "a", "text": "b"}`, "device:phone", errs.Invalid, []string{`duplicate key "text"`}},
		{"oversized", "textkit.slugify", `{"text": "` + strings.Repeat("a", decision.MaxInputBytes) + `"}`, "device:phone", errs.Invalid, []string{"over the 1048576 byte limit"}},
		{"schema: wrong type", "textkit.slugify", `{"text": 42}`, "device:phone", errs.Invalid, []string{"input of slugify does not meet its schema", "at /text", "want string"}},
		{"schema: missing", "textkit.json_pick", `{"json": 1}`, "device:phone", errs.Invalid, []string{"input of json_pick does not meet its schema", "missing property 'path'"}},
		{"schema: extra", "textkit.slugify", `{"text": "a", "lang": "fr"}`, "device:phone", errs.Invalid, []string{"additional properties 'lang' not allowed"}},
		{"unknown contract", "weather.forecast", `{}`, "device:phone", errs.NotFound, []string{`unknown tool weather.forecast: there is no contract named "weather"`}},
		{"unknown export", "textkit.upper", `{}`, "device:phone", errs.NotFound, []string{`has no tool "upper" (it has slugify, word_count, json_pick)`}},
		{"unknown export of a pending contract", "counter.nope", `{}`, "device:phone", errs.NotFound, []string{`has no tool "nope"`}},
		{"no export", "textkit", `{}`, "device:phone", errs.Invalid, []string{`tool "textkit" is not <contract name>.<export>`}},
		{"empty export", "textkit.", `{}`, "device:phone", errs.Invalid, []string{"is not <contract name>.<export>"}},
		{"no principal", "textkit.slugify", `{"text": "a"}`, "", errs.Invalid, []string{"principal is required"}},
		{"bad principal", "textkit.slugify", `{"text": "a"}`, "root", errs.Invalid, []string{`principal "root" is not`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, n := f.snapshot(), f.audit.len()
			resp, err := f.s.Evaluate(asOwner, &contractualv1.EvaluateRequest{Tool: tc.tool, Input: []byte(tc.input), Principal: tc.who})
			if resp != nil {
				t.Fatalf("got a decision: %v", resp.GetDecision())
			}
			wantErr(t, err, tc.kind, tc.msgs...)
			if after := f.snapshot(); after != before {
				t.Fatalf("the store changed:\n%s\nvs\n%s", before, after)
			}
			ev := onlyEvent(t, f.audit.since(n), actionRefused, tc.kind.String())
			if ev.GetDecisionId() != "" || ev.GetContractDigest() != "" {
				t.Fatalf("refusal event %v", ev)
			}
		})
	}
}

// TestEvaluateHighRisk checks that a high-risk tool needs a one-shot
// approval: the decision says so, and no verifier accepts it as an allow.
func TestEvaluateHighRisk(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	f.approve(f.publish(wasm, counter(wasm, "1.0.0", "high", "")).GetRecord().GetDigest())
	n := f.audit.len()
	resp := f.evaluate("counter.count_vowels", `{"text": "hello"}`)
	d := resp.GetDecision()
	if d.GetVerdict() != contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED || !strings.Contains(d.GetReason(), "one-shot approval") {
		t.Fatalf("high-risk decision: %v", d)
	}
	if evs := f.audit.since(n); len(evs) != 2 || evs[0].GetAction() != actionCallRequest || evs[1].GetAction() != actionDecision ||
		evs[1].GetOutcome() != "approval_required" {
		t.Fatalf("audit events %v, want a call approval request and the decision", evs)
	}
	pub, _ := f.s.GetVerifier(context.Background(), &contractualv1.GetVerifierRequest{})
	v, err := decision.NewVerifier(pub.GetPublicKeyset())
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(resp.GetSigned(), resp.GetCanonicalInput(), fixed)
	wantErr(t, err, errs.PermissionDenied, "not allow")
}

// TestAuditDown checks that policy fails closed: while the audit log
// cannot record, every operation fails with Unavailable and changes
// nothing; the approved cache keeps serving what the store says.
func TestAuditDown(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	v1 := f.publish(wasm, counter(wasm, "1.0.0", "low", "")).GetRecord().GetDigest()
	f.approve(v1)
	v2 := f.publish(wasm, counter(wasm, "1.0.1", "low", "")).GetRecord().GetDigest()
	textkitWasm, textkitCt := textkit(t)

	f.audit.setFail(errAuditDown)
	before := f.snapshot()
	calls := map[string]func() (any, error){
		"publish": func() (any, error) {
			return f.s.Publish(asOwner, &contractualv1.PublishRequest{Module: textkitWasm, Contract: textkitCt})
		},
		"refused publish": func() (any, error) {
			return f.s.Publish(asOwner, &contractualv1.PublishRequest{Module: wasm, Contract: []byte("{")})
		},
		"republish": func() (any, error) {
			return f.s.Publish(asOwner, &contractualv1.PublishRequest{Module: wasm, Contract: counter(wasm, "1.0.0", "low", "")})
		},
		"approve": func() (any, error) { return f.s.Approve(asOwner, &contractualv1.ApproveRequest{Digest: v2}) },
		"reject":  func() (any, error) { return f.s.Reject(asOwner, &contractualv1.RejectRequest{Digest: v2}) },
		"revoke":  func() (any, error) { return f.s.Revoke(asOwner, &contractualv1.RevokeRequest{Digest: v1}) },
		"evaluate": func() (any, error) {
			return f.s.Evaluate(asOwner, &contractualv1.EvaluateRequest{Tool: "counter.count_vowels", Input: []byte(`{"text":"a"}`), Principal: ownerDevice})
		},
		"refused evaluate": func() (any, error) {
			return f.s.Evaluate(asOwner, &contractualv1.EvaluateRequest{Tool: "nope.x", Input: []byte(`{}`), Principal: ownerDevice})
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			resp, err := call()
			wantErr(t, err, errs.Unavailable, "audit log")
			if after := f.snapshot(); after != before {
				t.Fatalf("the store changed:\n%s\nvs\n%s", before, after)
			}
			if !isNil(resp) {
				t.Fatalf("got a response: %v", resp)
			}
		})
	}
	f.audit.setFail(nil)
	if d := f.evaluate("counter.count_vowels", `{"text":"a"}`).GetDecision(); d.GetContractDigest() != v1 ||
		d.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW {
		t.Fatalf("after the audit log is back: %v", d)
	}
	if f.state(v2) != pending {
		t.Fatalf("v2 is %v", f.state(v2))
	}
}

// isNil reports whether a response held in an any is a nil pointer.
func isNil(v any) bool {
	switch r := v.(type) {
	case *contractualv1.PublishResponse:
		return r == nil
	case *contractualv1.ApproveResponse:
		return r == nil
	case *contractualv1.RejectResponse:
		return r == nil
	case *contractualv1.RevokeResponse:
		return r == nil
	case *contractualv1.EvaluateResponse:
		return r == nil
	}
	return v == nil
}

// TestRestart reopens the store: contracts, states and the signing key
// survive, and decisions made before verify with the key fetched after.
func TestRestart(t *testing.T) {
	f := newFixture(t)
	wasm, ct := textkit(t)
	v1 := f.publish(wasm, ct).GetRecord().GetDigest()
	f.approve(v1)
	count := hostile(t, "count")
	c1 := f.publish(count, counter(count, "1.0.0", "low", "")).GetRecord().GetDigest()
	c2 := f.publish(count, counter(count, "1.0.1", "low", "")).GetRecord().GetDigest()
	if _, err := f.s.Reject(asOwner, &contractualv1.RejectRequest{Digest: c1, Reason: "no"}); err != nil {
		t.Fatal(err)
	}
	before := f.evaluate("textkit.slugify", `{"text":"x"}`)
	list := func() string {
		l, err := f.s.ListContracts(context.Background(), &contractualv1.ListContractsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return (&contractualv1.ListContractsResponse{Records: l.GetRecords()}).String()
	}
	pub := func() []byte {
		p, _ := f.s.GetVerifier(context.Background(), &contractualv1.GetVerifierRequest{})
		return p.GetPublicKeyset()
	}
	wantList, wantPub := list(), pub()

	f.reopen()
	if got := list(); got != wantList {
		t.Fatalf("after restart:\n%s\nwant\n%s", got, wantList)
	}
	if got := pub(); string(got) != string(wantPub) {
		t.Fatal("the signing key changed across a restart")
	}
	for d, want := range map[string]contractualv1.ContractState{v1: approved, c1: rejected, c2: pending} {
		if got := f.state(d); got != want {
			t.Errorf("%s is %v, want %v", d, got, want)
		}
	}
	v, err := decision.NewVerifier(pub())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(before.GetSigned(), before.GetCanonicalInput(), fixed); err != nil {
		t.Fatalf("a decision from before the restart: %v", err)
	}
	after := f.evaluate("textkit.slugify", `{"text":"x"}`)
	if after.GetDecision().GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW || after.GetDecision().GetContractDigest() != v1 {
		t.Fatalf("after restart: %v", after.GetDecision())
	}
}

// TestSchemaCacheAgrees checks that the cached compiled schema and
// contract.CheckInput accept and refuse the same inputs.
func TestSchemaCacheAgrees(t *testing.T) {
	_, ct := textkit(t)
	c, err := contract.Load(ct, "contract.yaml")
	if err != nil {
		t.Fatal(err)
	}
	inputs := []string{
		`{"text":"a"}`, `{"text":""}`, `{"text":1}`, `{}`, `[]`, `"text"`, `null`, `{"text":"a","b":1}`,
		`{"text":"` + strings.Repeat("é", 100000) + `"}`, `{"text":"` + strings.Repeat("é", 100001) + `"}`,
		`{"json":null,"path":""}`, `{"json":{"a":[1,2.5e300]},"path":"a.1"}`, `{"path":"a"}`, `{"json":1,"path":2}`,
	}
	for _, tool := range c.GetTools() {
		te := &toolEntry{tool: tool}
		for _, in := range inputs {
			canon, err := decision.Canonical([]byte(in))
			if err != nil {
				t.Fatal(err)
			}
			fast, ref := te.checkInput(canon), contract.CheckInput(tool, canon)
			// The reference writes both messages; only its ordering of
			// properties varies from call to call.
			if (fast == nil) != (ref == nil) || errs.KindOf(fast) != errs.KindOf(ref) {
				t.Errorf("%s %.40s: cached %v, contract.CheckInput %v", tool.GetExport(), in, fast, ref)
			}
		}
		if te.schema() == nil {
			t.Errorf("%s: the schema did not compile", tool.GetExport())
		}
	}
}

// TestConcurrent evaluates calls while the contract changes under them:
// every decision names a contract that was approved at some point, and
// the race detector watches the cache.
func TestConcurrent(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	digests := map[string]bool{}
	for _, v := range []string{"1.0.0", "1.0.1", "1.0.2", "1.0.3"} {
		digests[f.publish(wasm, counter(wasm, v, "low", "")).GetRecord().GetDigest()] = true
	}
	var first string
	for d := range digests {
		first = d
		break
	}
	f.approve(first)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				resp, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: "counter.count_vowels", Input: []byte(`{"text":"a"}`), Principal: "session:j"})
				if err != nil {
					t.Error(err)
					return
				}
				if !digests[resp.GetDecision().GetContractDigest()] {
					t.Errorf("decision under %s", resp.GetDecision().GetContractDigest())
				}
			}
		})
	}
	for d := range digests {
		if d != first {
			f.approve(d)
		}
	}
	wg.Wait()
}
