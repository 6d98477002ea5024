package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
)

// callWithin runs the call in a goroutine and fails the test if it has not
// ended within limit (far above what it needs): a guest the sandbox cannot
// stop would otherwise hang the test binary.
func callWithin(t *testing.T, limit time.Duration, m *Module, export string, opts ...CallOption) (*Result, error) {
	t.Helper()
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := m.Call(context.Background(), export, nil, opts...)
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-time.After(limit):
		t.Fatalf("%s did not end within %s", export, limit)
		return nil, nil
	}
}

// TestMeterLoopFreeRecursion: a recursion with no loop (naive fib(60), hours
// of work) never reaches a loop back-edge, where wazero's own interruption
// check sits; metering checks at every function entry, so the call ends at
// its timeout.
func TestMeterLoopFreeRecursion(t *testing.T) {
	e := newEngine(t, egress.Config{})
	m := load(t, e, fixture(t, "hostile/fib.wasm"), Grants{Limits: Limits{Timeout: 100 * time.Millisecond}})
	res, err := callWithin(t, 2*time.Minute, m, "run")
	wantErr(t, err, errs.DeadlineExceeded, "timeout")
	if res == nil {
		t.Fatal("no Result")
	}
	// Metering does not change what the guest computes.
	long := load(t, e, fixture(t, "hostile/fib.wasm"), Grants{Limits: Limits{Timeout: time.Minute}})
	if _, err := long.Call(context.Background(), "check", nil); err != nil {
		t.Errorf("fib(25): %v", err)
	}
}

// TestMeterStack: a guest that recurses forever ends on the stack budget
// counted against its memory_mib, long before wazero's 50 MB stack ceiling,
// and its stack costs the process little memory (wazero doubles the stack as
// it grows: to the ceiling, about 150 MB of RSS).
func TestMeterStack(t *testing.T) {
	e := newEngine(t, egress.Config{})
	g := Grants{Limits: Limits{MemoryBytes: 16 << 20, Timeout: time.Minute}}
	m := load(t, e, fixture(t, "hostile/recursion.wasm"), g)
	if _, err := m.Call(context.Background(), "ok", nil); err != nil {
		t.Fatal(err)
	}
	// Return the garbage of earlier tests to the OS first, so that it cannot
	// hide the growth.
	debug.FreeOSMemory()
	resetPeakRSS(t)
	before := rss(t, "VmRSS")
	_, err := callWithin(t, 2*time.Minute, m, "run")
	peak := rss(t, "VmHWM")
	wantErr(t, err, errs.ResourceExhausted, "call stack of 2048 KiB")
	t.Logf("RSS %d MiB before the call, peak %d MiB during it (+%d MiB)", before>>20, peak>>20, (peak-before)>>20)
	// The budget is 2 MiB of estimated frames, which overestimate wazero's;
	// the bound leaves room for the garbage collector's slack.
	if grew := peak - before; grew > 32<<20 {
		t.Errorf("RSS grew by %d MiB during the call", grew>>20)
	}
	if _, err := m.Call(context.Background(), "ok", nil); err != nil {
		t.Errorf("the module no longer serves ok: %v", err)
	}
}

// TestMeterYield: the guest ticks at bounded intervals in a loop and in a
// loop-free recursion, each tick calls the call's yield hook with the call's
// context, and an error from the hook ends the call with that error.
func TestMeterYield(t *testing.T) {
	e := newEngine(t, egress.Config{})
	for _, file := range []string{"loop", "fib"} {
		t.Run(file, func(t *testing.T) {
			m := load(t, e, fixture(t, "hostile/"+file+".wasm"), Grants{Limits: Limits{Timeout: time.Minute}})
			calls := 0
			yield := func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("yield got a context without the call's deadline")
				}
				calls++
				if calls == 100 {
					return errs.E(errs.ResourceExhausted, "scheduler says stop")
				}
				return nil
			}
			_, err := callWithin(t, 2*time.Minute, m, "run", withYield(yield))
			wantErr(t, err, errs.ResourceExhausted, "scheduler says stop")
			if calls != 100 {
				t.Errorf("yield called %d times, want 100", calls)
			}
		})
	}
	// A call that never runs out of fuel never yields: the hook is called
	// only by ticks.
	m := load(t, e, fixture(t, "hostile/count.wasm"), Grants{})
	res, err := m.Call(context.Background(), "count_vowels", []byte("aeiou"), withYield(func(context.Context) error {
		return errs.E(errs.Internal, "yield called")
	}))
	if err != nil || string(res.Output) != `{"count": 5}` {
		t.Errorf("count: %q, %v", res.Output, err)
	}
}

// TestMeterRefusesUnsupported: a module the meter cannot read is refused
// at load, never run unmetered.
func TestMeterRefusesUnsupported(t *testing.T) {
	e := newEngine(t, egress.Config{})
	// A module whose only function body uses return_call (tail calls, not
	// enabled): type () -> (), one function, code: return_call 0, end.
	wasm := []byte("\x00asm\x01\x00\x00\x00" +
		"\x01\x04\x01\x60\x00\x00" + // type section
		"\x03\x02\x01\x00" + // function section
		"\x0a\x06\x01\x04\x00\x12\x00\x0b") // code section
	_, err := e.Load(context.Background(), wasm, Grants{})
	wantErr(t, err, errs.Invalid, "unsupported")
}

// resetPeakRSS resets the process's VmHWM to its current RSS.
func resetPeakRSS(t testing.TB) {
	t.Helper()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS: %v", err)
	}
}

// rss reads a memory figure of /proc/self/status, in bytes.
func rss(t testing.TB, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}
