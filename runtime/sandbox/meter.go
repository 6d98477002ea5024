package sandbox

import (
	"context"
	"errors"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/modcheck"
	"github.com/contractual/contractual/runtime/wasmbin"
)

// Load meters every module (modcheck.Meter): when the guest's fuel runs out
// it calls tick, which checks the call's context and lets the scheduler take
// the CPU (call.yield), then refuels it; when its call-stack budget runs out
// it calls tick, which ends the call.

// meterModule defines the tick function the metered guest imports.
func meterModule(ctx context.Context, rt wazero.Runtime) error {
	_, err := rt.NewHostModuleBuilder(modcheck.MeterEnv).
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
			"tool exhausted its call stack of %d KiB (deep recursion)", c.limits.StackBytes()>>10))
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
	return modcheck.TickFuel
}

// errStopped unwinds a guest whose call's context is done; Call reports the
// context's error (the timeout, or the caller's cancellation).
var errStopped = errors.New("call stopped")

func (c *call) stop() { panic(errStopped) }

// withYield sets the call's yield hook (the fair scheduler's; tests').
func withYield(f func(context.Context) error) CallOption {
	return func(o *callOptions) { o.yield = f }
}
