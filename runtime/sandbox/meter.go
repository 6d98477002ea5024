package sandbox

import (
	"context"
	"errors"
	"math"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/wasmbin"
)

// Guest code is metered (wasmbin.Meter): every function entry and loop head
// spends fuel, about one unit per instruction, and every call of a defined
// function is charged its frame against a call-stack budget. When the fuel
// runs out the guest calls tick, which checks the call's context and lets the
// scheduler take the CPU (call.yield), then refuels it; when the stack budget
// runs out it calls tick, which ends the call.
const (
	// meterEnv is the namespace of tick; checkImports refuses any module
	// that imports from it itself.
	meterEnv = "contractual:host/meter"
	// tickFuel is the fuel between two ticks. The tightest metered loop
	// (`loop br 0`) costs 2 units an iteration at about 2 ns, so it ticks
	// every ~30 µs; BenchmarkTick measured 20–31 µs a tick for loop, spin
	// and fib. A tick is one host call, a small fraction of that.
	tickFuel = 1 << 15
)

// Call-stack budget, counted against the contract's memory_mib: an eighth of
// it (at least minStack, at most maxStack, never more than half), and the
// linear memory may grow to what remains.
const (
	minStack = 256 << 10
	maxStack = 8 << 20
)

// stackBytes is the call's call-stack budget.
func (l Limits) stackBytes() uint64 {
	s := min(max(l.MemoryBytes/8, minStack), maxStack, l.MemoryBytes/2)
	return min(s, math.MaxInt32)
}

// meter instruments wasm for the limits l.
func meter(wasm []byte, l Limits) ([]byte, error) {
	out, err := wasmbin.Meter(wasm, wasmbin.Metering{
		Module: meterEnv,
		Name:   "tick",
		Fuel:   tickFuel,
		Stack:  int32(l.stackBytes()),
	})
	if errors.Is(err, wasmbin.ErrUnsupported) {
		return nil, errs.Wrap(errs.Invalid, err, "module uses a feature the sandbox does not run")
	}
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "instrumenting the module")
	}
	return out, nil
}

// meterModule defines the tick function the metered guest imports.
func meterModule(ctx context.Context, rt wazero.Runtime) error {
	_, err := rt.NewHostModuleBuilder(meterEnv).
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
			stack[0] = uint64(callFrom(ctx).tick(int32(stack[0])))
		}), []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}).
		Export("tick").
		Instantiate(ctx)
	return err
}

// tick is where a metered guest lands at bounded intervals: it ends the call
// if its stack budget ran out or its context is done, lets the scheduler
// take the CPU, and returns the guest's new fuel.
func (c *call) tick(reason int32) int32 {
	c.ticks++
	if reason == wasmbin.TickStack {
		c.abort(errs.E(errs.ResourceExhausted,
			"tool exhausted its call stack of %d KiB (deep recursion)", c.limits.stackBytes()>>10))
	}
	if c.ctx.Err() != nil {
		c.stop()
	}
	if c.yield != nil {
		if err := c.yield(c.ctx); err != nil {
			if c.ctx.Err() != nil {
				c.stop()
			}
			c.abort(err)
		}
	}
	return tickFuel
}

// errStopped unwinds a guest whose call's context is done; Call reports the
// context's error (the timeout, or the caller's cancellation).
var errStopped = errors.New("call stopped")

func (c *call) stop() { panic(errStopped) }

// withYield sets the call's yield hook (the fair scheduler's; tests').
func withYield(f func(context.Context) error) CallOption {
	return func(o *callOptions) { o.yield = f }
}
