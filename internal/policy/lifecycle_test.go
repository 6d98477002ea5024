package policy

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
)

// TestLifecycle walks a contract through its life: publish, a denied call,
// approval, an allowed and verifiable call, a one-byte update that stays
// pending while the approved one keeps running, its approval superseding
// the first, and revocation.
func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	wasm, ct := textkit(t)

	pub := f.publish(wasm, ct)
	v1 := pub.GetRecord().GetDigest()
	if pub.GetExisted() || pub.GetRecord().GetState() != pending || pub.GetPredecessor() != "" || len(pub.GetDiff()) != 0 {
		t.Fatalf("first publish: %v", pub)
	}
	if by := pub.GetRecord().GetPublishedBy(); by != ownerDevice {
		t.Errorf("published_by %q", by)
	}
	onlyEvent(t, f.audit.since(0), actionPublish, outcomeOK)

	n := f.audit.len()
	d := f.evaluate("textkit.slugify", `{"text": "Hello"}`).GetDecision()
	if d.GetVerdict() != contractualv1.Verdict_VERDICT_DENY || !strings.Contains(d.GetReason(), "contract textkit "+v1+" is pending approval") {
		t.Fatalf("pending contract: %v", d)
	}
	onlyEvent(t, f.audit.since(n), actionDecision, "deny")

	if rec := f.approve(v1); rec.GetState() != approved || rec.GetDecidedBy() != ownerDevice || rec.GetReason() != "looks fine" ||
		!rec.GetDecidedAt().AsTime().Equal(fixed) {
		t.Fatalf("approved record: %v", rec)
	}
	wantAllowed(t, f, "textkit.slugify", v1)

	// A one-byte change: a new pending contract, shown against v1, while
	// v1 still runs.
	pub = f.publish(wasm, bytes.Replace(ct, []byte("version: 1.0.0"), []byte("version: 1.0.1"), 1))
	v2 := pub.GetRecord().GetDigest()
	if v2 == v1 || pub.GetRecord().GetState() != pending || pub.GetPredecessor() != v1 {
		t.Fatalf("update: %v", pub)
	}
	wantDiff(t, pub.GetDiff(), `changed version: "1.0.0" → "1.0.1"`)
	got, err := f.s.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: v2})
	if err != nil || got.GetPredecessor() != v1 {
		t.Fatalf("GetContract(v2) = %v, %v", got, err)
	}
	wantDiff(t, got.GetDiff(), `changed version: "1.0.0" → "1.0.1"`)
	if got, _ := f.s.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: v1}); got.GetPredecessor() != "" || len(got.GetDiff()) != 0 {
		t.Fatalf("GetContract(v1), the approved one, has a diff: %v", got)
	}
	wantAllowed(t, f, "textkit.word_count", v1)

	// Approving v2 supersedes v1.
	n = f.audit.len()
	f.approve(v2)
	evs := f.audit.since(n)
	if len(evs) != 2 || evs[0].GetAction() != actionApprove || evs[0].GetContractDigest() != v2 ||
		evs[1].GetAction() != actionRevoke || evs[1].GetContractDigest() != v1 {
		t.Fatalf("approving v2 recorded %v", evs)
	}
	old, _ := f.s.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: v1})
	if r := old.GetRecord(); r.GetState() != revoked || r.GetReason() != "superseded by "+v2 {
		t.Fatalf("v1 after v2's approval: %v", r)
	}
	wantAllowed(t, f, "textkit.json_pick", v2)

	list, err := f.s.ListContracts(context.Background(), &contractualv1.ListContractsRequest{Name: "textkit"})
	if err != nil || len(list.GetRecords()) != 2 || list.GetRecords()[0].GetDigest() != v2 || list.GetRecords()[1].GetDigest() != v1 {
		t.Fatalf("list, newest first: %v, %v", list, err)
	}

	if _, err := f.s.Revoke(asOwner, &contractualv1.RevokeRequest{Digest: v2, Reason: "no longer needed"}); err != nil {
		t.Fatal(err)
	}
	d = f.evaluate("textkit.slugify", `{"text": "Hello"}`).GetDecision()
	if d.GetVerdict() != contractualv1.Verdict_VERDICT_DENY || !strings.Contains(d.GetReason(), "revoked by "+ownerDevice+": no longer needed") {
		t.Fatalf("revoked contract: %v", d)
	}
}

// wantAllowed evaluates a call of tool and checks that it is allowed under
// the contract digest, with a decision that the public keyset verifies for
// the call's input in another spelling.
func wantAllowed(t *testing.T, f *fixture, tool, digest string) {
	t.Helper()
	input := map[string]string{
		"textkit.slugify":    "{ \"text\" : \"Hello, World\" }",
		"textkit.word_count": "{\"text\":\"a b\\nc\"}",
		"textkit.json_pick":  `{"path": "a", "json": {"b": 1, "a": [1, 2]}}`,
	}[tool]
	n := f.audit.len()
	resp := f.evaluate(tool, input)
	d := resp.GetDecision()
	if d.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW || d.GetContractDigest() != digest || d.GetTool() != tool ||
		d.GetPrincipal() != "device:phone" || len(d.GetId()) != 32 {
		t.Fatalf("evaluate %s: %v", tool, d)
	}
	canon, err := decision.Canonical([]byte(input))
	if err != nil || !bytes.Equal(resp.GetCanonicalInput(), canon) || d.GetInputHash() != decision.Hash(canon) {
		t.Fatalf("canonical input %q, hash %s; want %q", resp.GetCanonicalInput(), d.GetInputHash(), canon)
	}
	if !d.GetIssuedAt().AsTime().Equal(fixed) || d.GetExpiresAt().AsTime().Sub(fixed) != DefaultDecisionTTL {
		t.Fatalf("decision times %v, %v", d.GetIssuedAt().AsTime(), d.GetExpiresAt().AsTime())
	}
	pub, err := f.s.GetVerifier(context.Background(), &contractualv1.GetVerifierRequest{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := decision.NewVerifier(pub.GetPublicKeyset())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(resp.GetSigned(), []byte(input), fixed); err != nil {
		t.Fatalf("verify: %v", err)
	}
	ev := onlyEvent(t, f.audit.since(n), actionDecision, "allow")
	if ev.GetDecisionId() != d.GetId() || ev.GetInputHash() != d.GetInputHash() || ev.GetTool() != tool ||
		strings.Contains(ev.String(), "Hello") {
		t.Fatalf("decision event %v", ev)
	}
}

// wantDiff fails unless diff has a change rendered as want ("kind path:
// old → new").
func wantDiff(t *testing.T, diff []*contractualv1.ContractChange, want string) {
	t.Helper()
	var got []string
	for _, c := range diff {
		line := c.GetKind() + " " + c.GetPath() + ": " + c.GetOld() + " → " + c.GetNew()
		if line == want {
			return
		}
		got = append(got, line)
	}
	t.Fatalf("diff %q lacks %q", got, want)
}

// TestGetContractCached checks that GetContract serves an approved contract
// from memory exactly as the store has it, and that a caller changing the
// record it got changes nothing for the next caller.
func TestGetContractCached(t *testing.T) {
	f := newFixture(t)
	wasm, ct := textkit(t)
	d := f.publish(wasm, ct).GetRecord().GetDigest()
	f.approve(d)
	stored, err := getRecord(context.Background(), f.s.db, d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.s.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.GetRecord(), stored) {
		t.Fatalf("cached record\n%v\nstore\n%v", got.GetRecord(), stored)
	}
	got.GetRecord().State = revoked
	got.GetRecord().DecidedAt.Seconds = 1
	if again := f.state(d); again != approved {
		t.Fatalf("a caller's change leaked into the cache: %v", again)
	}
}
