// Package sandbox runs Extism tool modules under a contract's grants.
//
// An Engine compiles modules (once per module, with wazero's compilation
// cache, optionally on disk, one directory per module, so that a restart is
// cheap and the code of a module no longer needed can be deleted). A Module
// is one module bound to one set of Grants; each Call runs in a fresh, isolated
// instance whose linear memory comes from a pool and is zeroed between calls.
// Every module is checked (package modcheck, which policy also calls at
// publish) and metered at load (modcheck.Meter, meter.go): the guest calls
// back into the host at bounded intervals, where the call's timeout and the
// scheduler act, and its call stack is bounded by its memory limit.
// Every call is interruptible, bounded by the contract's limits, and sees only
// what the contract grants: the capability host functions (config, log, HTTP)
// are Contractual's own, HTTP leaves only through the egress package, and WASI
// has no filesystem, no environment and no stdin.
package sandbox

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	goruntime "runtime"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/contractual/contractual/contracts/contract"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/fairq"
	"github.com/contractual/contractual/runtime/modcheck"
	"github.com/contractual/contractual/runtime/wasmbin"
)

// MaxModuleBytes caps the size of a module the engine accepts.
const MaxModuleBytes = modcheck.MaxModuleBytes

// Options configure an Engine.
type Options struct {
	// CacheDir, if set, keeps compiled modules on disk so that a restarted
	// process skips compiling them again.
	CacheDir string
	// Egress is the template of every call's egress configuration: the rules
	// and limits come from the module's grants, the rest (dialer, secret
	// source, TLS roots) from here. The zero value dials public addresses only.
	Egress egress.Config
	// Logger receives the engine's own diagnostics; nil discards them.
	Logger *slog.Logger
	// MaxConcurrent bounds the calls that run guest code at once (the CPU
	// slots); more wait their turn. Zero means GOMAXPROCS-1 (at least 1).
	// Guest code cannot be preempted by the Go scheduler, so calls that held
	// every P would starve the timers and watchers that stop them, and the
	// rest of the process; keeping one P free is what makes every call
	// interruptible.
	//
	// Calls wait in a fair queue (package fairq), by flow (WithFlow): a
	// call that has run for a Quantum gives its slot to a call of another
	// flow at its next interruption point (a tick of the metered guest, or
	// a host call), and a call blocked in an HTTP request or a WASI sleep
	// holds no slot. The wait counts against the call's timeout.
	MaxConcurrent int
	// MaxQueue bounds the calls waiting to start, MaxQueuePerFlow those of
	// one flow; beyond them a call is refused at once (errs.ResourceExhausted).
	// Zero means DefaultMaxQueue, resp. a quarter of MaxQueue.
	MaxQueue, MaxQueuePerFlow int
	// QueueTimeout bounds how long a call waits to start before it is
	// refused as busy (errs.ResourceExhausted), if its timeout has not ended
	// it first. Zero means DefaultQueueTimeout; negative, do not wait.
	QueueTimeout time.Duration
	// Quantum is how long a call runs before it gives its CPU slot to a
	// waiting call of another flow. Zero means DefaultQuantum.
	Quantum time.Duration
	// PoolReserved bounds the address space of the linear memories the
	// engine keeps between calls, for all its modules (each reserves its
	// whole maximum, but only the pages a guest touches become resident, and
	// they are given back when the call ends); past it, a memory a call
	// returns is unmapped. Zero means DefaultPoolReserved.
	PoolReserved uint64
	// PoolResident bounds the bytes those idle memories keep resident:
	// zeroed in place rather than given back, so that the next call does not
	// fault them in again. Zero means DefaultPoolResident.
	PoolResident uint64
	// PoolIdle is how long the pool keeps those warm pages after the last
	// call ended; then it gives them back, and the Go runtime its free heap.
	// Zero means DefaultPoolIdle.
	PoolIdle time.Duration
}

// Defaults of Options.
const (
	DefaultMaxQueue     = 1024
	DefaultQueueTimeout = time.Second
	DefaultQuantum      = fairq.DefaultQuantum
)

// Engine compiles and runs modules. It is safe for concurrent use.
type Engine struct {
	opts   Options
	caches *caches
	log    *slog.Logger
	cpu    *fairq.Queue
	// For the benchmarks that compare metering with what it replaced:
	// unmetered loads modules as they are, and closeOnDone turns on
	// wazero's own interruption (a check at every loop back-edge).
	unmetered, closeOnDone bool
	// memory pools the linear memories of all the engine's modules.
	memory *memoryPool

	// loadMu guards closed and the adds to loads: Close waits for the
	// loads in progress, and no load starts after it.
	loadMu sync.Mutex
	closed bool
	loads  sync.WaitGroup
	// testHookLoading, if set, runs in each Load before it compiles.
	testHookLoading func()
}

// NewEngine returns an Engine; Close releases its compilation cache.
func NewEngine(opts Options) (*Engine, error) {
	n := opts.MaxConcurrent
	if n <= 0 {
		n = max(goruntime.GOMAXPROCS(0)-1, 1)
	}
	maxQueue := cmp.Or(opts.MaxQueue, DefaultMaxQueue)
	cpu := fairq.New(fairq.Options{
		Name:           "sandbox",
		Slots:          n,
		MaxWait:        cmp.Or(opts.QueueTimeout, DefaultQueueTimeout),
		MaxWaiting:     maxQueue,
		MaxFlowWaiting: cmp.Or(opts.MaxQueuePerFlow, max(maxQueue/4, 1)),
		Quantum:        cmp.Or(opts.Quantum, DefaultQuantum),
	})
	e := &Engine{opts: opts, log: opts.Logger, cpu: cpu,
		memory: newMemoryPool(cmp.Or(opts.PoolReserved, DefaultPoolReserved), cmp.Or(opts.PoolResident, DefaultPoolResident),
			cmp.Or(opts.PoolIdle, DefaultPoolIdle))}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if e.caches, err = newCaches(opts.CacheDir, e.log); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "compilation cache in %s", opts.CacheDir)
	}
	return e, nil
}

// Busy returns the number of CPU slots held and of calls waiting for one.
func (e *Engine) Busy() (held, waiting int) { return e.cpu.Held(), e.cpu.Waiting() }

// Close releases the engine's compilation caches and unmaps its idle
// memories. Modules loaded from the engine must be closed first. Loads in
// progress finish first (a compilation cannot be interrupted, and closing
// its cache under it would crash the process), and later ones fail with
// errs.Unavailable; if ctx ends before the loads do, Close returns an
// error and leaves the caches and memories to the process's exit.
func (e *Engine) Close(ctx context.Context) error {
	e.loadMu.Lock()
	e.closed = true
	e.loadMu.Unlock()
	done := make(chan struct{})
	go func() { e.loads.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return errs.Wrap(errs.Unavailable, ctx.Err(), "sandbox: modules still compiling at close; the engine is left open")
	}
	e.memory.close()
	return e.caches.close(ctx)
}

// startLoad counts a load in progress, unless the engine is closed.
func (e *Engine) startLoad() error {
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	if e.closed {
		return errs.E(errs.Unavailable, "sandbox: the engine is closed")
	}
	e.loads.Add(1)
	return nil
}

// Module is a compiled module bound to the grants it runs under. Calls may
// run concurrently; each gets its own instance.
type Module struct {
	digest   string
	grants   Grants
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	exports  map[string]bool
	// init is the guest runtime's initializer (_initialize for a WASI
	// reactor, __wasm_call_ctors for C-like modules), or "".
	init   string
	memory *memoryPool
	egress egress.Config
	cpu    *fairq.Queue
	// footprint is Footprint of the module's bytes; release ends its use
	// of its compilation cache.
	footprint int64
	release   func()
}

// Digest returns the module's digest, sha256:<hex> of its bytes.
func (m *Module) Digest() string { return m.digest }

// HasExport reports whether the module exports a function named name.
func (m *Module) HasExport(name string) bool { return m.exports[name] }

// Close releases the compiled module.
func (m *Module) Close(ctx context.Context) error {
	err := m.rt.Close(ctx)
	m.release()
	return err
}

// Load checks wasm against g and compiles it. Compiling is cached by the
// module's bytes: loading the same module under other grants, or again after
// a restart with a CacheDir, skips the compiler. With a CacheDir, each
// module digest has its own cache directory (see Prune).
func (e *Engine) Load(ctx context.Context, wasm []byte, g Grants) (*Module, error) {
	if err := e.startLoad(); err != nil {
		return nil, err
	}
	defer e.loads.Done()
	if len(wasm) > MaxModuleBytes {
		return nil, errs.E(errs.Invalid, "module is %d bytes, over the %d byte limit", len(wasm), MaxModuleBytes)
	}
	g.Limits = g.Limits.WithDefaults()
	if err := modcheck.CheckImports(wasm, g); err != nil {
		return nil, err
	}
	exports, err := exportedFunctions(wasm)
	if err != nil {
		return nil, err
	}
	routed, err := wasmbin.Rename(wasm, routeCapabilities)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "rewriting the module's imports")
	}
	// Under a page apart, so that the zeros between them touch no new page.
	if routed, err = wasmbin.MergeData(routed, 4096); err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "merging the module's data segments")
	}
	start := time.Now()
	metered, err := routed, error(nil)
	if !e.unmetered {
		if metered, err = modcheck.Meter(routed, g.Limits); err != nil {
			return nil, err
		}
	}
	digest := contract.ModuleDigest(wasm)
	cache, release, err := e.caches.acquire(digest)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "compilation cache of module %s", digest)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCompilationCache(cache).
		WithCloseOnContextDone(e.closeOnDone).
		WithMemoryLimitPages(g.Limits.MemoryPages()))
	m := &Module{digest: digest, grants: g, rt: rt, exports: exports, egress: e.opts.Egress, cpu: e.cpu, memory: e.memory,
		footprint: Footprint(wasm), release: release}
	if e.testHookLoading != nil {
		e.testHookLoading()
	}
	if err := m.link(ctx, metered); err != nil {
		m.Close(ctx)
		return nil, err
	}
	e.log.Debug("module loaded", "digest", m.digest, "took", time.Since(start))
	return m, nil
}

// link provides the host modules and compiles the module.
func (m *Module) link(ctx context.Context, wasm []byte) error {
	if err := hostModule(ctx, m.rt); err != nil {
		return errs.Wrap(errs.Internal, err, "host module")
	}
	if err := meterModule(ctx, m.rt); err != nil {
		return errs.Wrap(errs.Internal, err, "meter host module")
	}
	if m.grants.WASI != nil {
		if _, err := wasi_snapshot_preview1.Instantiate(ctx, m.rt); err != nil {
			return errs.Wrap(errs.Internal, err, "WASI host module")
		}
	}
	compiled, err := m.rt.CompileModule(ctx, wasm)
	if err != nil {
		return errs.Wrap(errs.Invalid, err, "compiling module")
	}
	m.compiled = compiled
	for _, name := range []string{"_initialize", "__wasm_call_ctors"} {
		if def, ok := compiled.ExportedFunctions()[name]; ok && len(def.ParamTypes()) == 0 {
			m.init = name
			break
		}
	}
	return nil
}

// exportedFunctions lists the module's function exports.
func exportedFunctions(wasm []byte) (map[string]bool, error) {
	exports, err := wasmbin.Exports(wasm)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "reading the module's exports")
	}
	out := make(map[string]bool, len(exports))
	for _, e := range exports {
		if e.Kind == wasmbin.KindFunc {
			out[e.Name] = true
		}
	}
	return out, nil
}

// Result is what a call produced. Call returns it even when the call failed,
// so that the egress record and the logs of a failed call can be audited.
type Result struct {
	Output   []byte
	Egress   []egress.Record
	Logs     []LogEntry
	Stdout   string
	Stderr   string
	Duration time.Duration
	// PeakMemory is the largest linear memory the call used, in bytes.
	PeakMemory uint64
	// HostCalls counts the capability host calls the module made.
	HostCalls int
	// Released holds the secret values released to the egress client during
	// the call, for the output sanitizer. Never log or store them.
	Released [][]byte `json:"-"`
}

// MaxInputBytes caps a call's input.
const MaxInputBytes = 8 << 20

// CallOption configures one call.
type CallOption func(*callOptions)

type callOptions struct {
	secrets     egress.SecretSource
	yield       func(context.Context) error
	flow        fairq.Key
	idempotency func(n int) string
}

// WithFlow names who makes the call and which tool it calls: the calls of
// one principal to one tool are one flow, and flows share the CPU slots
// fairly. A call without it is in the flow of the module's export, with no
// principal.
func WithFlow(principal, tool string) CallOption {
	return func(o *callOptions) { o.flow = fairq.Key{Principal: principal, Tool: tool} }
}

// WithSecrets gives the call's egress the source of the secrets its rules
// inject, bound to this one call (the runner's source redeems broker
// handles for the call's decision).
func WithSecrets(src egress.SecretSource) CallOption {
	return func(o *callOptions) { o.secrets = src }
}

// WithIdempotencyKey makes every HTTP request of the call carry an
// Idempotency-Key header: key(n) for the call's n-th request (see
// egress.Config.IdempotencyKey).
func WithIdempotencyKey(key func(n int) string) CallOption {
	return func(o *callOptions) { o.idempotency = key }
}

// callEgress is the egress configuration of one call: the engine's
// template with the contract's rules and limits and the call's secrets and
// idempotency keys. One request may take as long as the call itself when
// that is longer than the template's timeout (egress.DefaultTimeout unless
// set): a tool whose contract allows a slow answer, such as a model
// provider's, is not cut off at the egress default.
func callEgress(tmpl egress.Config, g *Grants, co *callOptions) egress.Config {
	cfg := tmpl
	lim := g.Limits
	cfg.Rules = g.HTTP
	cfg.MaxRequests = lim.HTTPRequests
	cfg.MaxResponseBytes = lim.HTTPResponseBytes
	cfg.Timeout = max(cmp.Or(cfg.Timeout, egress.DefaultTimeout), lim.Timeout)
	if co.secrets != nil {
		cfg.Secrets = co.secrets
	}
	cfg.IdempotencyKey = co.idempotency
	return cfg
}

// Call runs export with input in a fresh instance of the module.
func (m *Module) Call(ctx context.Context, export string, input []byte, opts ...CallOption) (*Result, error) {
	var co callOptions
	for _, o := range opts {
		o(&co)
	}
	res := &Result{}
	def, ok := m.compiled.ExportedFunctions()[export]
	if !ok || export == m.init {
		return res, errs.E(errs.NotFound, "module %s exports no function %q", m.digest, export)
	}
	if len(def.ParamTypes()) != 0 || len(def.ResultTypes()) > 1 {
		return res, errs.E(errs.Invalid, "export %q is not an Extism function: it takes %d parameters and returns %d results",
			export, len(def.ParamTypes()), len(def.ResultTypes()))
	}
	lim := m.grants.Limits
	if len(input) > MaxInputBytes || uint64(len(input)) > lim.MemoryBytes/2 {
		return res, errs.E(errs.Invalid, "input of %d bytes is too large for this tool", len(input))
	}
	c := &call{limits: lim, grants: &m.grants, yield: co.yield}
	c.k = newKernel(c, lim.MemoryBytes)
	if !c.k.setInput(input) {
		return res, errs.E(errs.ResourceExhausted, "input of %d bytes does not fit the memory limit", len(input))
	}
	if len(m.grants.HTTP) > 0 {
		s, err := egress.NewSession(callEgress(m.egress, &m.grants, &co))
		if err != nil {
			return res, err
		}
		defer s.Close()
		c.egress = s
	}
	stdout := &cappedWriter{max: lim.StdioBytes}
	stderr := &cappedWriter{max: lim.StdioBytes}
	mc := wazero.NewModuleConfig().
		WithName(""). // anonymous: any number of instances at once
		WithStartFunctions().
		WithStdout(stdout).
		WithStderr(stderr).
		WithStdin(bytes.NewReader(nil)).
		WithRandSource(rand.Reader)
	if w := m.grants.WASI; w != nil && w.Clock {
		mc = mc.WithSysWalltime().WithSysNanotime().WithNanosleep(c.sleep)
	}

	// The timeout starts before the wait for a CPU slot: a call never ends
	// later than its timeout because others ran first.
	callCtx, cancel := context.WithTimeout(ctx, lim.Timeout)
	defer cancel()
	if co.flow == (fairq.Key{}) {
		co.flow.Tool = m.digest + "." + export
	}
	if err := m.schedule(ctx, callCtx, c, co.flow); err != nil {
		return res, err
	}
	defer c.slot.Release()
	mem := &callMemory{pool: m.memory}
	callCtx = experimental.WithMemoryAllocator(callCtx, mem)
	callCtx = context.WithValue(callCtx, callKey{}, c)
	c.ctx = callCtx

	start := time.Now()
	rc, err := m.run(callCtx, mc, export)
	res.Duration = time.Since(start)
	res.PeakMemory, _ = mem.peak()
	res.HostCalls = c.hostCalls
	res.Logs = c.logs
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	if c.egress != nil {
		res.Egress = c.egress.Records()
		res.Released = c.egress.Released()
	}
	if err != nil {
		return res, m.classify(ctx, callCtx, c, mem, err)
	}
	if msg := c.k.errorMessage(); msg != "" {
		return res, errs.E(errs.ToolFailed, "tool error: %s", msg)
	}
	if rc != 0 {
		return res, errs.E(errs.ToolFailed, "tool returned %d without an error message", rc)
	}
	if c.k.outputLen > uint64(lim.OutputBytes) {
		return res, errs.E(errs.ResourceExhausted,
			"output of %d bytes exceeds the contract's limit of %d bytes", c.k.outputLen, lim.OutputBytes)
	}
	res.Output = bytes.Clone(c.k.outputBytes())
	return res, nil
}

// run instantiates the module, initializes its guest runtime, calls export
// and closes the instance. It returns the export's result code.
func (m *Module) run(ctx context.Context, mc wazero.ModuleConfig, export string) (rc uint32, err error) {
	inst, err := m.rt.InstantiateModule(ctx, m.compiled, mc)
	if err != nil {
		return 0, err
	}
	// Close with a fresh context: the call's may be done, and closing must
	// still release the instance (and return its memory to the pool).
	defer inst.Close(context.Background())
	if m.init != "" {
		if _, err := inst.ExportedFunction(m.init).Call(ctx); err != nil {
			return 0, err
		}
	}
	results, err := inst.ExportedFunction(export).Call(ctx)
	var exit *sys.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 0 {
		return 0, nil // a WASI command that exits 0 succeeded
	}
	if err != nil || len(results) == 0 {
		return 0, err
	}
	return api.DecodeU32(results[0]), nil
}

// classify turns what wazero reports into one clear error.
func (m *Module) classify(parent, callCtx context.Context, c *call, mem *callMemory, err error) error {
	lim := m.grants.Limits
	if c.violation != nil {
		return c.violation
	}
	if parent.Err() != nil {
		return errs.Wrap(errs.Unavailable, parent.Err(), "call canceled")
	}
	if errors.Is(callCtx.Err(), context.DeadlineExceeded) {
		return errs.E(errs.DeadlineExceeded, "tool exceeded its %s timeout", lim.Timeout)
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		return errs.E(errs.ToolFailed, "tool exited with code %d", exit.ExitCode())
	}
	msg := firstLine(err.Error())
	if strings.Contains(msg, "stack overflow") {
		return errs.E(errs.ResourceExhausted, "tool exhausted its call stack (deep recursion): %s", msg)
	}
	if _, atMax := mem.peak(); atMax {
		return errs.E(errs.ResourceExhausted, "tool reached its memory limit of %d MiB: %s", lim.MemoryBytes>>20, msg)
	}
	if strings.HasPrefix(msg, "wasm error:") {
		return errs.E(errs.ToolFailed, "tool trapped: %s", msg)
	}
	return errs.E(errs.ToolFailed, "tool failed: %s", msg)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}

// String describes the module for logs.
func (m *Module) String() string { return fmt.Sprintf("module %s", m.digest) }
