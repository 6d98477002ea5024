package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/metrics"
	"github.com/contractual/contractual/internal/policy"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/runtime/sandbox"
)

// asOwner is a context of the owner's device, which may publish and decide.
var asOwner = principal.With(context.Background(), "device:owner")

// live is a runner over a real policy service and an engine of its own
// with an on-disk compilation cache, so that the feed between them and the
// compiled code on disk are the real ones.
type live struct {
	t        testing.TB
	policy   *policy.Service
	audit    *recorder
	engine   *sandbox.Engine
	cacheDir string
	svc      *Service
}

func newLive(t testing.TB) *live {
	t.Helper()
	l := &live{t: t, audit: &recorder{}, cacheDir: filepath.Join(t.TempDir(), "cache")}
	pol, err := policy.Open(context.Background(), policy.Config{Dir: filepath.Join(t.TempDir(), "policy")}, policy.Deps{Audit: l.audit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pol.Close(context.Background()) })
	l.policy = pol
	return l
}

// start starts the runner, with a fresh engine on l's cache directory.
func (l *live) start(opts Config) {
	l.t.Helper()
	eng, err := sandbox.NewEngine(sandbox.Options{CacheDir: l.cacheDir})
	if err != nil {
		l.t.Fatal(err)
	}
	svc, err := New(context.Background(), opts, Deps{Policy: l.policy, Broker: noSecrets{}, Audit: l.audit, Engine: eng, Metrics: metrics.NewRegistry().Tools()})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		if err := svc.Close(context.Background()); err != nil {
			l.t.Error(err)
		}
		eng.Close(context.Background())
	})
	l.engine, l.svc = eng, svc
}

// stop closes the runner and its engine.
func (l *live) stop() {
	l.t.Helper()
	if err := l.svc.Close(context.Background()); err != nil {
		l.t.Fatal(err)
	}
	l.engine.Close(context.Background())
}

// publish publishes the i-th variant of count.wasm as contract name (at
// version) and returns the contract's digest and module.
func (l *live) publish(name string, i int, version string) (digest string, wasm []byte) {
	l.t.Helper()
	wasm = variant(hostile(l.t, "count.wasm"), i)
	ct := strings.Replace(smallContract(wasm, name, []string{"count_vowels"}, ""), "version: 1.0.0", "version: "+version, 1)
	resp, err := l.policy.Publish(asOwner, &contractualv1.PublishRequest{Module: wasm, Contract: []byte(ct)})
	if err != nil {
		l.t.Fatal(err)
	}
	return resp.GetRecord().GetDigest(), wasm
}

// approve approves the contract digest.
func (l *live) approve(digest string) {
	l.t.Helper()
	if _, err := l.policy.Approve(asOwner, &contractualv1.ApproveRequest{Digest: digest}); err != nil {
		l.t.Fatal(err)
	}
}

// invoke decides a call of name.count_vowels with policy and executes it.
func (l *live) invoke(name string) (*contractualv1.ExecuteResponse, error) {
	l.t.Helper()
	ev, err := l.policy.Evaluate(context.Background(), &contractualv1.EvaluateRequest{
		Tool: name + ".count_vowels", Input: []byte(`{"text":"aeiou"}`), Principal: "device:phone",
	})
	if err != nil {
		l.t.Fatal(err)
	}
	return l.svc.Execute(context.Background(), &contractualv1.ExecuteRequest{Decision: ev.GetSigned(), Input: ev.GetCanonicalInput()})
}

// waitFor waits until cond holds, checking it whenever the runner's cache
// or follower changes; it fails the test after two minutes.
func (l *live) waitFor(what string, cond func() bool) {
	l.t.Helper()
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	for {
		_, _, changed := l.svc.modules.stats()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			l.t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// synced waits until the runner has applied every change policy made so
// far.
func (l *live) synced() {
	l.t.Helper()
	now, err := l.policy.WatchContracts(context.Background(), &contractualv1.WatchContractsRequest{})
	if err != nil {
		l.t.Fatal(err)
	}
	l.waitFor("the runner applied policy's changes", func() bool {
		epoch, rev := l.svc.follower.at()
		return epoch == now.GetEpoch() && rev >= now.GetRevision()
	})
}

// cached reports whether the module of the contract digest is loaded in
// the runner's cache.
func (l *live) cached(digest string) bool {
	return slices.Contains(l.svc.modules.cached(), digest)
}

// onDisk reports whether the compiled code of wasm is on disk.
func (l *live) onDisk(wasm []byte) bool {
	_, err := os.Stat(filepath.Join(l.cacheDir, strings.TrimPrefix(contract.ModuleDigest(wasm), "sha256:")))
	return err == nil
}

// TestWarmAtPublish: publishing a contract compiles its module in the
// background while the owner reviews it, so that the first call after the
// approval runs the module already loaded; rejecting it drops the module.
func TestWarmAtPublish(t *testing.T) {
	l := newLive(t)
	l.start(Config{})
	d, wasm := l.publish("a", 1, "1.0.0")
	l.waitFor("the pending contract's module is loaded", func() bool { return l.cached(d) })
	if !l.onDisk(wasm) {
		t.Fatal("the warmed module's compiled code is not on disk")
	}
	l.svc.modules.mu.Lock()
	warmed := l.svc.modules.entries[d]
	l.svc.modules.mu.Unlock()
	if _, err := l.invoke("a"); err == nil {
		t.Fatal("a pending contract's tool ran")
	}
	l.approve(d)
	resp, err := l.invoke("a")
	if err != nil || string(resp.GetOutput()) != `{"count": 6}` {
		t.Fatalf("first call: %v, %v", resp, err)
	}
	l.svc.modules.mu.Lock()
	called := l.svc.modules.entries[d]
	l.svc.modules.mu.Unlock()
	if called != warmed {
		t.Fatal("the first call loaded the module again instead of using the one compiled while pending")
	}

	r, rwasm := l.publish("b", 2, "1.0.0")
	l.waitFor("the second pending module is loaded", func() bool { return l.cached(r) })
	if _, err := l.policy.Reject(asOwner, &contractualv1.RejectRequest{Digest: r}); err != nil {
		t.Fatal(err)
	}
	l.waitFor("the rejected contract's module is dropped, its code deleted", func() bool {
		return !l.cached(r) && !l.onDisk(rwasm)
	})
	if !l.cached(d) {
		t.Fatal("rejecting b dropped a's module")
	}
}

// TestWarmPendingAtStart: a runner that starts (or whose feed starts over)
// while a contract is pending compiles it too: the feed's snapshot lists
// the pending contracts after the approved ones.
func TestWarmPendingAtStart(t *testing.T) {
	l := newLive(t)
	d, wasm := l.publish("p", 3, "1.0.0")
	l.start(Config{})
	l.waitFor("the pending contract's module is loaded", func() bool { return l.cached(d) && l.onDisk(wasm) })
}

// TestWarmAtStart: a runner starting beside approved contracts compiles
// their modules newest approval first, as many as fit in its cache, and
// evicts nothing to warm more.
func TestWarmAtStart(t *testing.T) {
	l := newLive(t)
	var digests []string
	for i := range 4 {
		d, _ := l.publish(fmt.Sprintf("t%d", i), i, "1.0.0")
		l.approve(d)
		digests = append(digests, d)
	}
	per := sandbox.Footprint(variant(hostile(t, "count.wasm"), 0))
	l.start(Config{ModuleCacheBytes: 2*per + per/2})
	l.synced()
	l.waitFor("warming is done", l.svc.follower.idle)
	var got []bool
	for _, d := range digests {
		got = append(got, l.cached(d))
	}
	if want := []bool{false, false, true, true}; !slices.Equal(got, want) {
		t.Fatalf("cached (oldest approval first): %v, want %v", got, want)
	}
}

// TestWarmDropsRevoked: a superseded or revoked contract's module leaves
// the cache and its compiled code the disk, at once or, if a call is using
// it, when the call is done; at start, the compiled code of modules no
// approved or pending contract uses is deleted.
func TestWarmDropsRevoked(t *testing.T) {
	l := newLive(t)
	stale, staleWasm := l.publish("stale", 9, "1.0.0") // compiled by an earlier run, since rejected
	if _, err := l.policy.Reject(asOwner, &contractualv1.RejectRequest{Digest: stale}); err != nil {
		t.Fatal(err)
	}
	eng, err := sandbox.NewEngine(sandbox.Options{CacheDir: l.cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	m, err := eng.Load(context.Background(), staleWasm, sandbox.Grants{})
	if err != nil {
		t.Fatal(err)
	}
	m.Close(context.Background())
	eng.Close(context.Background())
	if !l.onDisk(staleWasm) {
		t.Fatal("setup: no compiled code on disk")
	}
	l.start(Config{})
	l.waitFor("the stale code is deleted at start", func() bool { return !l.onDisk(staleWasm) })
	if l.cached(stale) {
		t.Fatal("a rejected contract's module was loaded")
	}

	v1, wasm1 := l.publish("a", 1, "1.0.0")
	l.approve(v1)
	l.waitFor("v1 is loaded", func() bool { return l.cached(v1) })
	v2, wasm2 := l.publish("a", 2, "2.0.0")
	l.approve(v2) // supersedes v1
	l.waitFor("v2 replaces v1", func() bool { return l.cached(v2) && !l.cached(v1) && !l.onDisk(wasm1) })
	if !l.onDisk(wasm2) {
		t.Fatal("v2's compiled code is not on disk")
	}

	// Revoked while a call uses it: the code goes when the call is done.
	l.svc.modules.mu.Lock()
	e := l.svc.modules.entries[v2]
	e.refs++
	l.svc.modules.mu.Unlock()
	if _, err := l.policy.Revoke(asOwner, &contractualv1.RevokeRequest{Digest: v2}); err != nil {
		t.Fatal(err)
	}
	l.synced()
	if l.cached(v2) {
		t.Fatal("the revoked module is still cached")
	}
	if !l.onDisk(wasm2) {
		t.Fatal("the code of a module in use was deleted")
	}
	l.svc.modules.release(e)
	if l.onDisk(wasm2) {
		t.Fatal("the revoked module's code stayed after its last use")
	}
	if _, err := l.invoke("a"); err == nil {
		t.Fatal("a revoked contract ran")
	}
}

// TestWarmRestart: a restarted runner finds the compiled code of the
// approved modules on disk and warms them again.
func TestWarmRestart(t *testing.T) {
	l := newLive(t)
	d, wasm := l.publish("a", 1, "1.0.0")
	l.approve(d)
	l.start(Config{})
	l.waitFor("the module is loaded", func() bool { return l.cached(d) })
	l.stop()
	if !l.onDisk(wasm) {
		t.Fatal("an approved module's code was deleted at close")
	}
	l.start(Config{})
	l.waitFor("the module is loaded after the restart", func() bool { return l.cached(d) })
	if resp, err := l.invoke("a"); err != nil || string(resp.GetOutput()) != `{"count": 6}` {
		t.Fatalf("call after restart: %v, %v", resp, err)
	}
}
