package sandbox

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// residentBytes is how much of b is resident, as the pool itself counts it
// (mincore on Linux).
func residentBytes(t testing.TB, b []byte) uint64 {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("resident pages are counted on Linux only")
	}
	n, err := zeroResident(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkBudgets fails unless the pool's idle reservations add up to no more
// than it counts (exactly as much if no put is under way), it counts no more
// than its budgets, and they hold no more resident pages than it counts.
func checkBudgets(t testing.TB, p *memoryPool, quiet bool) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var reserved, warm, resident uint64
	for size, rs := range p.idle {
		for _, r := range rs {
			if uint64(len(r.buf)) != size {
				t.Fatalf("a %d-byte reservation is pooled as %d bytes", len(r.buf), size)
			}
			reserved += size
			warm += r.warm
			resident += residentBytes(t, r.buf[:r.writable])
		}
	}
	if reserved > p.reserved || warm > p.resident || quiet && (reserved != p.reserved || warm != p.resident) {
		t.Fatalf("pool counts %d reserved and %d resident bytes, holds %d and %d", p.reserved, p.resident, reserved, warm)
	}
	if p.reserved > p.maxReserved || p.resident > p.maxResident {
		t.Fatalf("pool holds %d reserved bytes (budget %d) and %d resident (budget %d)",
			p.reserved, p.maxReserved, p.resident, p.maxResident)
	}
	if resident > p.resident {
		t.Fatalf("idle reservations hold %d resident bytes, the pool counts %d", resident, p.resident)
	}
}

// TestPoolBudgets: memories of many sizes, as 200 modules with different
// limits would use them, come and go concurrently; the idle ones never take
// the pool past either budget, counted or measured.
func TestPoolBudgets(t *testing.T) {
	const maxReserved, maxResident = 256 << 20, 2 << 20
	p := newMemoryPool(maxReserved, maxResident, 0)
	defer p.close()
	sizes := []uint64{pageSize, 1 << 20, 16 << 20, 17 << 20, 64 << 20, 200 << 20}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			for range 200 {
				m := &linearMemory{pool: p, max: sizes[rnd.IntN(len(sizes))]}
				r, err := p.get(m.max)
				if err != nil {
					t.Error(err)
					return
				}
				m.r = r
				// Grow to a few pages and dirty each one, as a guest would.
				used := m.Reallocate(pageSize * uint64(1+rnd.IntN(int(min(m.max/pageSize, 40)))))
				for i := 0; i < len(used); i += os.Getpagesize() {
					used[i] = 1
				}
				m.Free()
				checkBudgets(t, p, false)
			}
		})
	}
	wg.Wait()
	checkBudgets(t, p, true)
	if p.reserved == 0 || p.resident == 0 {
		t.Errorf("the pool kept nothing (%d reserved, %d resident bytes): nothing was tested", p.reserved, p.resident)
	}
}

// TestPoolZeroes: a reservation comes back from the pool all zero, whether
// its pages were kept warm, given back, or were never touched.
func TestPoolZeroes(t *testing.T) {
	for _, maxResident := range []uint64{0, 256 << 10, 64 << 20} {
		t.Run(fmt.Sprint(maxResident), func(t *testing.T) {
			p := newMemoryPool(1<<30, maxResident, 0)
			defer p.close()
			for round := range 3 {
				r, err := p.get(16 << 20)
				if err != nil {
					t.Fatal(err)
				}
				m := &linearMemory{pool: p, r: r, max: 16 << 20}
				buf := m.Reallocate(1 << 20)
				if i := bytes.IndexFunc(r.buf[:r.writable], func(c rune) bool { return c != 0 }); i >= 0 {
					t.Fatalf("round %d: byte %d of a pooled memory is not zero", round, i)
				}
				// Dirty every other page, and grow again next round.
				for i := 0; i < len(buf); i += 2 * os.Getpagesize() {
					buf[i] = 0xff
				}
				m.Reallocate(uint64(round+2) << 20)
				m.Free()
				checkBudgets(t, p, true)
			}
		})
	}
}

// mapped reports whether b's first byte lies in a mapping of the process.
func mapped(t *testing.T, b []byte) bool {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skipf("no /proc/self/maps: %v", err)
	}
	addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	for line := range strings.Lines(string(maps)) {
		var lo, hi uint64
		if _, err := fmt.Sscanf(line, "%x-%x", &lo, &hi); err == nil && lo <= addr && addr < hi {
			return true
		}
	}
	return false
}

// TestPoolUnmaps: closing the pool unmaps its idle reservations, a
// reservation returned after that is unmapped at once, and so is one that
// does not fit the budget.
func TestPoolUnmaps(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reservations are mappings on Linux only")
	}
	p := newMemoryPool(32<<20, 1<<20, 0)
	a, _ := p.get(16 << 20)
	b, _ := p.get(16 << 20)
	c, _ := p.get(16 << 20)
	d, _ := p.get(16 << 20)
	p.put(a, 0)
	p.put(b, 0)
	p.put(c, 0) // over the 32 MiB budget
	if !mapped(t, a.buf) || !mapped(t, b.buf) || mapped(t, c.buf) {
		t.Fatalf("within the budget: mapped %v %v; over it: mapped %v", mapped(t, a.buf), mapped(t, b.buf), mapped(t, c.buf))
	}
	p.close()
	if mapped(t, a.buf) || mapped(t, b.buf) {
		t.Error("close left an idle reservation mapped")
	}
	if !mapped(t, d.buf) {
		t.Fatal("close unmapped a reservation in use")
	}
	p.put(d, 0)
	if mapped(t, d.buf) {
		t.Error("a reservation returned to a closed pool is still mapped")
	}
}

// TestPoolTrim: after idleAfter without a call, the pool gives back its warm
// pages; its reservations stay, zero.
func TestPoolTrim(t *testing.T) {
	p := newMemoryPool(1<<30, 16<<20, 0)
	defer p.close()
	touch := func(n uint64) *reservation {
		r, _ := p.get(16 << 20)
		m := &linearMemory{pool: p, r: r, max: 16 << 20}
		clear(m.Reallocate(n))
		m.Free()
		return r
	}
	r := touch(4 << 20)
	if p.resident != 4<<20 || residentBytes(t, r.buf[:r.writable]) != 4<<20 {
		t.Fatalf("4 MiB touched, %d counted warm", p.resident)
	}
	// Now with the timer (and no timer yet running to race with).
	trimmed := make(chan struct{}, 1)
	p.mu.Lock()
	p.idleAfter, p.trimmed = time.Millisecond, func() { trimmed <- struct{}{} }
	p.mu.Unlock()
	touch(1 << 20)
	<-trimmed
	checkBudgets(t, p, true)
	if p.resident != 0 || p.reserved != 16<<20 {
		t.Errorf("after trim: %d resident, %d reserved bytes", p.resident, p.reserved)
	}
}
