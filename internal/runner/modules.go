package runner

import (
	"container/list"
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/rpc"
	"github.com/contractual/contractual/runtime/sandbox"
)

// loadTimeout bounds fetching and compiling one module.
const loadTimeout = 2 * time.Minute

// moduleCache keeps compiled modules by contract digest, each loaded under
// its contract's grants, within a budget of bytes: each module counts
// sandbox.Footprint of its bytes, and the least recently used go first. A
// module is loaded once however many calls want it at the same time: the
// first starts the load, the others wait for it. The load runs on its own,
// so a caller that gives up does not fail the others. An evicted module is
// closed once the last call using it is done; a module larger than the
// whole budget serves the calls that loaded it and is not kept.
type moduleCache struct {
	engine *sandbox.Engine
	policy Policy
	budget int64
	log    *slog.Logger

	// base ends when the cache closes, and with it the loads in progress.
	base   context.Context
	cancel context.CancelFunc
	loads  sync.WaitGroup

	mu      sync.Mutex
	entries map[string]*moduleEntry
	lru     *list.List // of *moduleEntry, most recently used first
	used    int64      // the footprints of the entries in lru
	closed  bool
	// changed is closed, and replaced, whenever an entry is added to or
	// removed from lru.
	changed chan struct{}
}

// moduleEntry is one contract's module, loaded or loading.
type moduleEntry struct {
	digest string
	// ready is closed when the load ended; then contract, mod and err are
	// set and never change.
	ready chan struct{}
	// contract is the normalized contract, its digest checked.
	contract *contractualv1.Contract
	mod      *sandbox.Module
	err      error

	// Guarded by moduleCache.mu.
	refs    int
	elem    *list.Element
	evicted bool
	loaded  bool // the load ended: contract, mod and err are set
	// back puts the module at the back of lru when it is loaded (a module
	// loaded ahead of use), not the front.
	back bool
}

func newModuleCache(engine *sandbox.Engine, policy Policy, budget int64, log *slog.Logger) *moduleCache {
	base, cancel := context.WithCancel(context.Background())
	return &moduleCache{
		engine: engine, policy: policy, budget: budget, log: log,
		base: base, cancel: cancel,
		entries: make(map[string]*moduleEntry), lru: list.New(),
		changed: make(chan struct{}),
	}
}

// builder fetches and compiles the module of one contract.
type builder func(context.Context) (*contractualv1.Contract, *sandbox.Module, error)

// get returns the module of the contract with digest, loading it (from ct,
// policy's copy of the contract) if it is not cached. The caller must
// release the entry.
func (c *moduleCache) get(ctx context.Context, digest string, ct *contractualv1.Contract) (*moduleEntry, error) {
	return c.acquire(ctx, digest, false, func(ctx context.Context) (*contractualv1.Contract, *sandbox.Module, error) {
		n, wasm, err := c.fetch(ctx, digest, ct)
		if err != nil {
			return nil, nil, err
		}
		return c.compile(ctx, digest, n, wasm)
	})
}

// acquire returns the entry of digest, starting its load with build if it
// is neither cached nor loading. The caller must release the entry.
func (c *moduleCache) acquire(ctx context.Context, digest string, back bool, build builder) (*moduleEntry, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errs.E(errs.Unavailable, "runner is closed")
	}
	e := c.entries[digest]
	switch {
	case e == nil:
		e = &moduleEntry{digest: digest, ready: make(chan struct{}), back: back}
		c.entries[digest] = e
		c.loads.Add(1)
		go c.load(ctx, e, build)
	case e.elem != nil && !back:
		c.lru.MoveToFront(e.elem)
	}
	e.refs++
	c.mu.Unlock()

	select {
	case <-e.ready:
	case <-ctx.Done():
		c.release(e)
		return nil, errs.Wrap(errs.Unavailable, ctx.Err(), "call canceled while loading the module of contract %s", digest)
	}
	if e.err != nil {
		c.release(e)
		return nil, e.err
	}
	return e, nil
}

// release ends one call's use of e.
func (c *moduleCache) release(e *moduleEntry) {
	c.mu.Lock()
	e.refs--
	closeNow := e.evicted && e.refs == 0 && e.loaded
	c.mu.Unlock()
	if closeNow {
		e.close()
	}
}

// load fills e and publishes it. Its context keeps the values of the call
// that asked (not its cancellation) and ends with the cache.
func (c *moduleCache) load(ctx context.Context, e *moduleEntry, build builder) {
	defer c.loads.Done()
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
	defer cancel()
	defer context.AfterFunc(c.base, cancel)()
	start := time.Now()
	ct, mod, err := build(lctx)

	c.mu.Lock()
	var closing []*moduleEntry
	if err == nil && c.closed {
		mod.Close(context.Background())
		ct, mod, err = nil, nil, errs.E(errs.Unavailable, "runner is closed")
	}
	e.contract, e.mod, e.err, e.loaded = ct, mod, err, true
	switch {
	case err != nil:
		if c.entries[e.digest] == e {
			delete(c.entries, e.digest) // the next call tries again
		}
		e.evicted = true
	case c.entries[e.digest] != e:
		// Dropped while loading: it serves the calls waiting for it only.
		if e.refs == 0 {
			closing = append(closing, e)
		}
	default:
		if e.back {
			e.elem = c.lru.PushBack(e)
		} else {
			e.elem = c.lru.PushFront(e)
		}
		c.used += mod.Footprint()
		closing = c.evict()
		c.notify()
	}
	close(e.ready)
	c.mu.Unlock()

	for _, old := range closing {
		old.close()
	}
	if err != nil {
		c.log.Warn("module load failed", "contract", e.digest, "err", err)
		return
	}
	c.log.Debug("module loaded", "contract", e.digest, "module", ct.GetModule(), "bytes", mod.Footprint(), "took", time.Since(start))
}

// fetch checks ct against digest, fetches its module and checks the
// module's digest. It returns the normalized contract and the module.
func (c *moduleCache) fetch(ctx context.Context, digest string, ct *contractualv1.Contract) (*contractualv1.Contract, []byte, error) {
	if ct == nil {
		return nil, nil, errs.E(errs.PermissionDenied, "policy returned contract %s without its content", digest)
	}
	n := proto.CloneOf(ct)
	contract.Normalize(n)
	got, err := contract.Digest(n)
	if err != nil {
		return nil, nil, errs.E(errs.PermissionDenied, "contract %s from policy cannot be encoded: %v", digest, err)
	}
	if got != digest {
		return nil, nil, errs.E(errs.PermissionDenied, "contract digest mismatch: policy returned, for %s, a contract whose digest is %s", digest, got)
	}
	resp, err := c.policy.GetModule(ctx, &contractualv1.GetModuleRequest{Digest: n.GetModule()})
	if err != nil {
		if err = rpc.FromConnect(err); errs.Is(err, errs.NotFound) {
			return nil, nil, errs.E(errs.FailedPrecondition, "module %s of contract %s is not in policy: %v", n.GetModule(), digest, err)
		}
		return nil, nil, errs.Wrap(errs.Unavailable, err, "fetching module %s from policy", n.GetModule())
	}
	wasm := resp.GetModule()
	if got := contract.ModuleDigest(wasm); got != n.GetModule() {
		return nil, nil, errs.E(errs.PermissionDenied,
			"module digest mismatch: contract %s names module %s, but policy returned bytes whose digest is %s", digest, n.GetModule(), got)
	}
	return n, wasm, nil
}

// compile compiles wasm, the module of the normalized contract n, under n's
// grants.
func (c *moduleCache) compile(ctx context.Context, digest string, n *contractualv1.Contract, wasm []byte) (*contractualv1.Contract, *sandbox.Module, error) {
	mod, err := c.engine.Load(ctx, wasm, sandbox.GrantsFor(n))
	if err != nil {
		return nil, nil, errs.Wrap(errs.KindOf(err), err, "loading module %s of contract %s", n.GetModule(), digest)
	}
	return n, mod, nil
}

// errFull is warm's answer when a module does not fit beside the cached
// ones.
var errFull = errs.E(errs.ResourceExhausted, "the module cache is full")

// warm loads the module of the contract with digest (ct, from policy)
// ahead of its first call, unless it is cached or loading. If fill is set,
// the module goes at the back of the cache, and only if it fits beside the
// modules there (errFull otherwise): warming never evicts what calls used.
// Otherwise it goes at the front, like a called module.
func (c *moduleCache) warm(ctx context.Context, digest string, ct *contractualv1.Contract, fill bool) error {
	if c.has(digest) {
		if !fill {
			c.touch(digest)
		}
		return nil
	}
	n, wasm, err := c.fetch(ctx, digest, ct)
	if err != nil {
		return err
	}
	size := sandbox.Footprint(wasm)
	c.mu.Lock()
	full := size > c.budget || (fill && c.used+size > c.budget)
	c.mu.Unlock()
	if full {
		return errFull
	}
	e, err := c.acquire(ctx, digest, fill, func(ctx context.Context) (*contractualv1.Contract, *sandbox.Module, error) {
		return c.compile(ctx, digest, n, wasm)
	})
	if err != nil {
		return err
	}
	c.release(e)
	return nil
}

// touch makes the cached module of digest the most recently used: a
// contract compiled while pending is about to be called once approved.
func (c *moduleCache) touch(digest string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[digest]; e != nil && e.elem != nil {
		c.lru.MoveToFront(e.elem)
	}
}

// has reports whether the module of digest is cached or loading.
func (c *moduleCache) has(digest string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[digest] != nil
}

// drop removes the module of digest from the cache: it closes once no call
// uses it. A load in progress serves the calls waiting for it, and is not
// cached.
func (c *moduleCache) drop(digest string) {
	c.mu.Lock()
	e := c.entries[digest]
	if e == nil {
		c.mu.Unlock()
		return
	}
	delete(c.entries, digest)
	closeNow := c.remove(e)
	c.mu.Unlock()
	if closeNow {
		e.close()
	}
	c.log.Debug("module dropped", "contract", digest)
}

// evict drops the least recently used entries beyond the budget and returns
// those no call uses, to be closed now; the others close on their last
// release. The caller holds mu.
func (c *moduleCache) evict() []*moduleEntry {
	var closing []*moduleEntry
	for c.used > c.budget && c.lru.Len() > 0 {
		old := c.lru.Back().Value.(*moduleEntry)
		delete(c.entries, old.digest)
		if c.remove(old) {
			closing = append(closing, old)
		}
		c.log.Debug("module evicted", "contract", old.digest)
	}
	return closing
}

// remove takes e, no longer in entries, out of lru, and reports whether no
// call uses it (it is to be closed now). The caller holds mu.
func (c *moduleCache) remove(e *moduleEntry) bool {
	e.evicted = true
	if e.elem == nil {
		return false // loading: load sees it is not in entries
	}
	c.lru.Remove(e.elem)
	e.elem = nil
	c.used -= e.mod.Footprint()
	c.notify()
	return e.refs == 0
}

// notify wakes whoever waits on changed. The caller holds mu.
func (c *moduleCache) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// close stops the loads in progress, waits for them (until ctx ends), and
// closes every module no call uses; the others close on their last release.
func (c *moduleCache) close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	done := make(chan struct{})
	go func() { c.loads.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = errs.Wrap(errs.Unavailable, ctx.Err(), "runner: module loads still in progress at close")
	}

	c.mu.Lock()
	var closing []*moduleEntry
	for digest, e := range c.entries {
		if e.elem == nil {
			continue // still loading: the load sees closed and cleans up
		}
		delete(c.entries, digest)
		if c.remove(e) {
			closing = append(closing, e)
		}
	}
	c.mu.Unlock()
	for _, e := range closing {
		e.close()
	}
	return err
}

// cached returns the digests of the cached modules.
func (c *moduleCache) cached() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, c.lru.Len())
	for el := c.lru.Front(); el != nil; el = el.Next() {
		out = append(out, el.Value.(*moduleEntry).digest)
	}
	return out
}

// signal wakes whoever waits on changed, after a change outside the cache
// that concerns it (the follower applied a change of policy's).
func (c *moduleCache) signal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.notify()
}

// stats returns the number of cached modules and their footprints' sum,
// and a channel closed at the next change of either.
func (c *moduleCache) stats() (n int, used int64, changed <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.used, c.changed
}

// len returns the number of cached modules.
func (c *moduleCache) len() int {
	n, _, _ := c.stats()
	return n
}

// close releases e's compiled module, if it has one. It is called once, by
// whoever saw the entry evicted with no call using it.
func (e *moduleEntry) close() {
	if e.mod != nil {
		e.mod.Close(context.Background())
	}
}
