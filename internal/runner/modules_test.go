package runner

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/runtime/sandbox"
)

// variant returns wasm with a custom section that makes it a distinct
// module (another digest) that behaves the same.
func variant(wasm []byte, i int) []byte {
	sec := append([]byte{1, 'v'}, fmt.Sprintf("%08d", i)...)
	out := append([]byte(nil), wasm...)
	out = append(out, 0, byte(len(sec)))
	return append(out, sec...)
}

// countVariant publishes the i-th variant of count.wasm under a contract
// named name and returns its contract and digest.
func (f *fixture) countVariant(name string, i int) (*contractualv1.Contract, string) {
	wasm := variant(hostile(f.t, "count.wasm"), i)
	ct := f.publish(wasm, smallContract(wasm, name, []string{"count_vowels"}, ""))
	return ct, digestOf(f.t, ct)
}

// cacheGet gets the module of ct from c, failing the test on error.
func (f *fixture) cacheGet(c *moduleCache, ct *contractualv1.Contract) *moduleEntry {
	f.t.Helper()
	digest := digestOf(f.t, ct)
	e, err := c.get(context.Background(), digest, f.policy.records[digest].GetContract())
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

// checkBudget fails unless c's accounted bytes are the footprints of the
// modules it holds and within its budget.
func checkBudget(t *testing.T, c *moduleCache) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum int64
	for el := c.lru.Front(); el != nil; el = el.Next() {
		sum += el.Value.(*moduleEntry).mod.Footprint()
	}
	if sum != c.used || c.used > c.budget {
		t.Fatalf("cache holds %d modules of %d bytes, accounts %d, budget %d", c.lru.Len(), sum, c.used, c.budget)
	}
}

// TestModuleCacheEvicts: beyond its byte budget the least recently used
// module is dropped; one in use is closed only when its call is done.
func TestModuleCacheEvicts(t *testing.T) {
	f := newFixture(t, Config{})
	a, b := f.count("a"), f.count("b")
	c := newModuleCache(engine, f.policy, sandbox.Footprint(hostile(t, "count.wasm")), slog.New(slog.DiscardHandler))
	defer c.close(context.Background())
	ea := f.cacheGet(c, a)
	eb := f.cacheGet(c, b) // evicts a, which is in use
	if c.len() != 1 || !ea.evicted {
		t.Fatalf("%d cached, a evicted %v", c.len(), ea.evicted)
	}
	checkBudget(t, c)
	if res, err := ea.mod.Call(context.Background(), "count_vowels", []byte("aa")); err != nil || string(res.Output) != `{"count": 2}` {
		t.Fatalf("evicted module in use stopped working: %v", err)
	}
	c.release(ea) // closes a
	if _, err := ea.mod.Call(context.Background(), "count_vowels", nil); err == nil {
		t.Fatal("the evicted module was not closed after its last use")
	}
	c.release(eb)
	c.release(f.cacheGet(c, a)) // loads a again, evicts b (unused: closed at once)
	if n := f.policy.count("GetModule"); n != 3 {
		t.Fatalf("GetModule called %d times, want 3", n)
	}
	if _, err := eb.mod.Call(context.Background(), "count_vowels", nil); err == nil {
		t.Fatal("the evicted, unused module was not closed")
	}
}

// TestModuleCacheBudget: the cache holds as many modules as fit its byte
// budget, never more bytes; a big module evicts as many small ones as it
// needs, not all; one larger than the budget serves its call and is not
// kept.
func TestModuleCacheBudget(t *testing.T) {
	f := newFixture(t, Config{})
	small := sandbox.Footprint(variant(hostile(t, "count.wasm"), 0))
	textkit := readFile(t, "tools/textkit/textkit.wasm")
	big := sandbox.Footprint(textkit)
	smalls := make([]*contractualv1.Contract, 30)
	for i := range smalls {
		smalls[i], _ = f.countVariant(fmt.Sprintf("t%d", i), i)
	}

	ten := newModuleCache(engine, f.policy, 10*small, slog.New(slog.DiscardHandler))
	defer ten.close(context.Background())
	for _, ct := range smalls {
		ten.release(f.cacheGet(ten, ct))
		checkBudget(t, ten)
	}
	if n := ten.len(); n != 10 {
		t.Fatalf("%d modules cached, want the 10 that fit", n)
	}

	c := newModuleCache(engine, f.policy, big+10*small, slog.New(slog.DiscardHandler))
	defer c.close(context.Background())
	for _, ct := range smalls {
		c.release(f.cacheGet(c, ct))
	}
	if n := c.len(); n != len(smalls) {
		t.Fatalf("%d modules cached, want all %d", n, len(smalls))
	}
	tk := f.publish(textkit, smallContract(textkit, "textkit", []string{"slugify"}, "capabilities: {wasi: {clock: true, random: true}}\n"))
	c.release(f.cacheGet(c, tk))
	checkBudget(t, c)
	if n := c.len(); n != 1+10 {
		t.Fatalf("%d modules cached beside the big one, want the 10 most recent", n-1)
	}
	for i, ct := range smalls {
		if cached := c.has(digestOf(t, ct)); cached != (i >= 20) {
			t.Fatalf("small module %d cached: %v; want only the 10 most recent", i, cached)
		}
	}

	tiny := newModuleCache(engine, f.policy, small-1, slog.New(slog.DiscardHandler))
	defer tiny.close(context.Background())
	ct, _ := f.countVariant("too-big", 99)
	e := f.cacheGet(tiny, ct)
	if res, err := e.mod.Call(context.Background(), "count_vowels", []byte("aaa")); err != nil || string(res.Output) != `{"count": 3}` {
		t.Fatalf("a module over the budget did not serve its call: %v", err)
	}
	if tiny.len() != 0 {
		t.Fatal("a module over the whole budget was kept")
	}
	tiny.release(e)
	if _, err := e.mod.Call(context.Background(), "count_vowels", nil); err == nil {
		t.Fatal("the module over the budget was not closed after its call")
	}
}
