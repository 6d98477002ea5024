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
// its contract's grants, least recently used first out. A module is loaded
// once however many calls want it at the same time: the first starts the
// load, the others wait for it. The load runs on its own, so a caller that
// gives up does not fail the others. An evicted module is closed once the
// last call using it is done.
type moduleCache struct {
	engine *sandbox.Engine
	policy Policy
	max    int
	log    *slog.Logger

	// base ends when the cache closes, and with it the loads in progress.
	base   context.Context
	cancel context.CancelFunc
	loads  sync.WaitGroup

	mu      sync.Mutex
	entries map[string]*moduleEntry
	lru     *list.List // of *moduleEntry, most recently used first
	closed  bool
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
}

func newModuleCache(engine *sandbox.Engine, policy Policy, max int, log *slog.Logger) *moduleCache {
	base, cancel := context.WithCancel(context.Background())
	return &moduleCache{
		engine: engine, policy: policy, max: max, log: log,
		base: base, cancel: cancel,
		entries: make(map[string]*moduleEntry), lru: list.New(),
	}
}

// get returns the module of the contract with digest, loading it (from ct,
// policy's copy of the contract) if it is not cached. The caller must
// release the entry.
func (c *moduleCache) get(ctx context.Context, digest string, ct *contractualv1.Contract) (*moduleEntry, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errs.E(errs.Unavailable, "runner is closed")
	}
	e := c.entries[digest]
	switch {
	case e == nil:
		e = &moduleEntry{digest: digest, ready: make(chan struct{})}
		c.entries[digest] = e
		c.loads.Add(1)
		go c.load(ctx, e, ct)
	case e.elem != nil:
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
	closeNow := e.evicted && e.refs == 0
	c.mu.Unlock()
	if closeNow {
		e.close()
	}
}

// load fills e and publishes it. Its context keeps the values of the call
// that asked (not its cancellation) and ends with the cache.
func (c *moduleCache) load(ctx context.Context, e *moduleEntry, ct *contractualv1.Contract) {
	defer c.loads.Done()
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
	defer cancel()
	defer context.AfterFunc(c.base, cancel)()
	start := time.Now()
	ct, mod, err := c.build(lctx, e.digest, ct)

	c.mu.Lock()
	var closing []*moduleEntry
	if err == nil && c.closed {
		mod.Close(context.Background())
		ct, mod, err = nil, nil, errs.E(errs.Unavailable, "runner is closed")
	}
	e.contract, e.mod, e.err = ct, mod, err
	if err != nil {
		if c.entries[e.digest] == e {
			delete(c.entries, e.digest) // the next call tries again
		}
		e.evicted = true
	} else {
		e.elem = c.lru.PushFront(e)
		closing = c.evict()
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
	c.log.Debug("module loaded", "contract", e.digest, "module", ct.GetModule(), "took", time.Since(start))
}

// build checks ct against digest, fetches its module, checks the module's
// digest and compiles it under ct's grants.
func (c *moduleCache) build(ctx context.Context, digest string, ct *contractualv1.Contract) (*contractualv1.Contract, *sandbox.Module, error) {
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
	mod, err := c.engine.Load(ctx, wasm, sandbox.GrantsFor(n))
	if err != nil {
		return nil, nil, errs.Wrap(errs.KindOf(err), err, "loading module %s of contract %s", n.GetModule(), digest)
	}
	return n, mod, nil
}

// evict drops the least recently used entries beyond max and returns those
// no call uses, to be closed now; the others close on their last release.
// The caller holds mu.
func (c *moduleCache) evict() []*moduleEntry {
	var closing []*moduleEntry
	for c.lru.Len() > c.max {
		old := c.lru.Remove(c.lru.Back()).(*moduleEntry)
		old.elem, old.evicted = nil, true
		delete(c.entries, old.digest)
		if old.refs == 0 {
			closing = append(closing, old)
		}
		c.log.Debug("module evicted", "contract", old.digest)
	}
	return closing
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
		c.lru.Remove(e.elem)
		e.elem, e.evicted = nil, true
		if e.refs == 0 {
			closing = append(closing, e)
		}
	}
	c.mu.Unlock()
	for _, e := range closing {
		e.close()
	}
	return err
}

// len returns the number of cached modules.
func (c *moduleCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// close releases e's compiled module, if it has one. It is called once, by
// whoever saw the entry evicted with no call using it.
func (e *moduleEntry) close() {
	if e.mod != nil {
		e.mod.Close(context.Background())
	}
}
