package modcheck

import (
	"errors"
	"math"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/wasmbin"
)

// Guest code is metered (wasmbin.Meter): every function entry and loop head
// spends fuel, about one unit per instruction, and every call of a defined
// function is charged its frame against a call-stack budget. When the fuel
// runs out the guest calls MeterEnv's tick, where the sandbox checks the
// call's context and lets its scheduler take the CPU, and refuels it with
// TickFuel; when the stack budget runs out it calls tick, which ends the
// call.
const (
	// MeterEnv is the namespace of tick; CheckImports refuses any module
	// that imports from it itself.
	MeterEnv = "contractual:host/meter"
	// TickFuel is the fuel between two ticks. The tightest metered loop
	// (`loop br 0`) costs 2 units an iteration at about 2 ns, so it ticks
	// every ~30 µs; the sandbox's BenchmarkTick measured 20–31 µs a tick
	// for loop, spin and fib. A tick is one host call, a small fraction of
	// that.
	TickFuel = 1 << 15
)

// Call-stack budget, counted against the contract's memory_mib: an eighth of
// it (at least minStack, at most maxStack, never more than half), and the
// linear memory may grow to what remains.
const (
	minStack = 256 << 10
	maxStack = 8 << 20
	pageSize = 64 << 10
)

// StackBytes is a call's call-stack budget.
func (l Limits) StackBytes() uint64 {
	s := min(max(l.MemoryBytes/8, minStack), maxStack, l.MemoryBytes/2)
	return min(s, math.MaxInt32)
}

// MemoryPages is the linear memory limit in Wasm pages (at least one): what
// MemoryBytes leaves after the call stack's share (StackBytes).
func (l Limits) MemoryPages() uint32 {
	return uint32(max((l.MemoryBytes-l.StackBytes())/pageSize, 1))
}

// Meter instruments wasm for the limits l, which must have their defaults
// (Limits.WithDefaults): the guest calls tick in MeterEnv at bounded
// intervals and when its call stack would pass l.StackBytes. A module the
// meter cannot read is errs.Invalid.
func Meter(wasm []byte, l Limits) ([]byte, error) {
	out, err := wasmbin.Meter(wasm, wasmbin.Metering{
		Module: MeterEnv,
		Name:   "tick",
		Fuel:   TickFuel,
		Stack:  int32(l.StackBytes()),
	})
	if errors.Is(err, wasmbin.ErrUnsupported) {
		return nil, errs.Wrap(errs.Invalid, err, "module uses a feature the sandbox does not run")
	}
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "instrumenting the module")
	}
	return out, nil
}
