package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// named returns counter's contract renamed to name.
func named(wasm []byte, name, version string) []byte {
	return []byte(strings.Replace(string(counter(wasm, version, "low", "")), "name: counter", "name: "+name, 1))
}

// watch calls WatchContracts after resp (nil: the first call).
func (f *fixture) watch(after *contractualv1.WatchContractsResponse) *contractualv1.WatchContractsResponse {
	f.t.Helper()
	resp, err := f.s.WatchContracts(context.Background(), &contractualv1.WatchContractsRequest{
		Epoch: after.GetEpoch(), Revision: after.GetRevision(),
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return resp
}

// changesOf renders changes as "state name digest-prefix" lines.
func changesOf(cs []*contractualv1.ApprovalChange) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%s %s %s %s\n", stateName(c.GetState()), c.GetName(), c.GetDigest()[7:15], c.GetModule()[7:15])
	}
	return b.String()
}

// change renders one expected change the way changesOf does.
func change(st contractualv1.ContractState, name, digest, module string) string {
	return fmt.Sprintf("%s %s %s %s\n", stateName(st), name, digest[7:15], module[7:15])
}

// TestWatchContracts: the first answer is every approved contract, newest
// approval first; then each publication, approval, supersession,
// revocation and rejection comes once, in order.
func TestWatchContracts(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	mod := contract.ModuleDigest(wasm)
	var digests []string
	for i, name := range []string{"a", "b", "c"} {
		f.now = fixed.Add(time.Duration(i) * time.Minute)
		d := f.publish(wasm, named(wasm, name, "1.0.0")).GetRecord().GetDigest()
		f.approve(d)
		digests = append(digests, d)
	}
	first := f.watch(nil)
	want := change(approved, "c", digests[2], mod) + change(approved, "b", digests[1], mod) + change(approved, "a", digests[0], mod)
	if !first.GetSnapshot() || changesOf(first.GetChanges()) != want {
		t.Fatalf("first answer (snapshot %v):\n%s\nwant:\n%s", first.GetSnapshot(), changesOf(first.GetChanges()), want)
	}

	// Changes made while nobody watches, then asked for.
	b2 := f.publish(wasm, named(wasm, "b", "2.0.0")).GetRecord().GetDigest()
	f.approve(b2)
	if _, err := f.s.Revoke(asOwner, &contractualv1.RevokeRequest{Digest: digests[0]}); err != nil {
		t.Fatal(err)
	}
	rejected := f.publish(wasm, named(wasm, "c", "9.0.0")).GetRecord().GetDigest()
	if _, err := f.s.Reject(asOwner, &contractualv1.RejectRequest{Digest: rejected}); err != nil {
		t.Fatal(err)
	}
	next := f.watch(first)
	want = change(pending, "b", b2, mod) + change(revoked, "b", digests[1], mod) + change(approved, "b", b2, mod) +
		change(revoked, "a", digests[0], mod) + change(pending, "c", rejected, mod) + change(contractualv1.ContractState_CONTRACT_STATE_REJECTED, "c", rejected, mod)
	if next.GetSnapshot() || next.GetEpoch() != first.GetEpoch() || next.GetRevision() != first.GetRevision()+6 || changesOf(next.GetChanges()) != want {
		t.Fatalf("changes (snapshot %v, revision %d after %d):\n%s\nwant:\n%s",
			next.GetSnapshot(), next.GetRevision(), first.GetRevision(), changesOf(next.GetChanges()), want)
	}

	// A watch at the current revision answers with the next change.
	got := make(chan *contractualv1.WatchContractsResponse, 1)
	go func() {
		resp, err := f.s.WatchContracts(context.Background(), &contractualv1.WatchContractsRequest{Epoch: next.GetEpoch(), Revision: next.GetRevision()})
		if err != nil {
			t.Error(err)
		}
		got <- resp
	}()
	d := f.publish(wasm, named(wasm, "d", "1.0.0")).GetRecord().GetDigest()
	if resp := <-got; resp.GetSnapshot() || changesOf(resp.GetChanges()) != change(pending, "d", d, mod) {
		t.Fatalf("waiting watch got:\n%s", changesOf(resp.GetChanges()))
	}
}

// TestWatchContractsWaits: with nothing new, WatchContracts answers after
// its wait with no change and the same revision; a canceled watch fails.
func TestWatchContractsWaits(t *testing.T) {
	f := newFixture(t)
	s, err := Open(context.Background(), Config{Dir: t.TempDir(), WatchWait: time.Millisecond}, Deps{Audit: f.audit})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	first, err := s.WatchContracts(context.Background(), &contractualv1.WatchContractsRequest{})
	if err != nil || !first.GetSnapshot() || len(first.GetChanges()) != 0 {
		t.Fatalf("first answer of an empty policy: %v, %v", first, err)
	}
	req := &contractualv1.WatchContractsRequest{Epoch: first.GetEpoch(), Revision: first.GetRevision()}
	resp, err := s.WatchContracts(context.Background(), req)
	if err != nil || resp.GetSnapshot() || len(resp.GetChanges()) != 0 || resp.GetRevision() != first.GetRevision() {
		t.Fatalf("a watch with nothing new: %v, %v", resp, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.s.WatchContracts(ctx, &contractualv1.WatchContractsRequest{Epoch: f.watch(nil).GetEpoch()}); err == nil {
		t.Fatal("a canceled watch did not fail")
	}
}

// TestWatchContractsSnapshot: a caller whose revision policy no longer
// knows (another run of policy, a revision from the future, or further
// behind than the changes kept) gets the whole approved set again.
func TestWatchContractsSnapshot(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	d := f.publish(wasm, named(wasm, "a", "1.0.0")).GetRecord().GetDigest()
	f.approve(d)
	cur := f.watch(nil)
	want := change(approved, "a", d, contract.ModuleDigest(wasm))

	for name, req := range map[string]*contractualv1.WatchContractsRequest{
		"other epoch": {Epoch: "0123456789abcdef", Revision: cur.GetRevision()},
		"future":      {Epoch: cur.GetEpoch(), Revision: cur.GetRevision() + 1},
	} {
		resp, err := f.s.WatchContracts(context.Background(), req)
		if err != nil || !resp.GetSnapshot() || changesOf(resp.GetChanges()) != want {
			t.Errorf("%s: %v, %v", name, resp, err)
		}
	}

	f.reopen()
	if resp := f.watch(cur); !resp.GetSnapshot() || resp.GetEpoch() == cur.GetEpoch() || changesOf(resp.GetChanges()) != want {
		t.Fatalf("after a restart: %v", resp)
	}

	cur = f.watch(nil)
	noise := &contractualv1.ApprovalChange{Digest: "sha256:" + strings.Repeat("0", 64), Name: "x", Module: "sha256:" + strings.Repeat("0", 64), State: revoked}
	f.s.mu.Lock()
	for range feedLength + 1 {
		f.s.setApproved(f.s.approved.Load(), proto.CloneOf(noise))
	}
	f.s.mu.Unlock()
	if resp := f.watch(cur); !resp.GetSnapshot() || changesOf(resp.GetChanges()) != want {
		t.Fatalf("further behind than the changes kept: %v", resp)
	}
	cur.Revision += 1
	if resp := f.watch(cur); resp.GetSnapshot() || len(resp.GetChanges()) != feedLength {
		t.Fatalf("as far behind as the changes kept: snapshot %v, %d changes", resp.GetSnapshot(), len(resp.GetChanges()))
	}
}

// TestWatchContractsSnapshotPending: a snapshot lists the approved
// contracts, then the pending ones newest first, and so does one after a
// restart; an approved or rejected contract is no longer pending.
func TestWatchContractsSnapshotPending(t *testing.T) {
	f := newFixture(t)
	wasm := hostile(t, "count")
	mod := contract.ModuleDigest(wasm)
	d := map[string]string{}
	for i, name := range []string{"a", "p", "q", "r"} {
		f.now = fixed.Add(time.Duration(i) * time.Minute)
		d[name] = f.publish(wasm, named(wasm, name, "1.0.0")).GetRecord().GetDigest()
	}
	f.approve(d["a"])
	if _, err := f.s.Reject(asOwner, &contractualv1.RejectRequest{Digest: d["r"]}); err != nil {
		t.Fatal(err)
	}
	want := change(approved, "a", d["a"], mod) + change(pending, "q", d["q"], mod) + change(pending, "p", d["p"], mod)
	for _, when := range []string{"running", "after a restart"} {
		if when != "running" {
			f.reopen()
		}
		got := f.watch(nil)
		if !got.GetSnapshot() || changesOf(got.GetChanges()) != want {
			t.Fatalf("%s: snapshot %v:\n%s\nwant:\n%s", when, got.GetSnapshot(), changesOf(got.GetChanges()), want)
		}
	}
}
