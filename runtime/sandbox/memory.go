package sandbox

import (
	"runtime/debug"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/experimental"
)

// Defaults of the engine's memory pool (Options).
const (
	// DefaultPoolReserved lets 1,024 idle memories of the default 16 MiB
	// limit wait for the next call: address space only, no memory.
	DefaultPoolReserved = 16 << 30
	// DefaultPoolResident is what idle memories may keep resident.
	DefaultPoolResident = 64 << 20
	// DefaultPoolIdle is how long the pool keeps warm pages with no call.
	DefaultPoolIdle = 10 * time.Second
)

// smallMemory is the most a returned memory may have touched for the pool
// to zero all of it, and count it all as resident, rather than ask the
// system which of its pages are: a syscall that costs more than zeroing a
// small guest's memory.
const smallMemory = 64 << 10

// pageSize is the size of a Wasm memory page.
const pageSize = 64 << 10

// memoryPool recycles the reservations of linear memories between the calls
// of all of an engine's modules, so that a fresh instance per call does not
// map a fresh memory. A reservation returns to the pool only after what its
// last user touched is zeroed (no call sees another's data), and the pool
// stays within two budgets: the address space its idle reservations hold,
// and the bytes they keep resident. Past the first, a returned reservation
// is unmapped. Within the second, the pages a call touched are zeroed in
// place and stay warm, so that the next call does not fault them in again
// (a fault costs more than zeroing a page); past it, they are given back.
// When no call has ended for a while, the pool gives back its warm pages.
//
// Unlike a sync.Pool, it does not empty at every garbage collection, which
// would turn each GC into a burst of mappings.
type memoryPool struct {
	maxReserved, maxResident uint64
	idleAfter                time.Duration

	mu       sync.Mutex
	idle     map[uint64][]*reservation // by size, the most recently returned last
	reserved uint64                    // the address space of the idle reservations
	resident uint64                    // the warm bytes they keep
	timer    *time.Timer               // trims the pool after idleAfter without a put
	closed   bool

	trimmed func() // a test's hook, called after each trim
}

// reservation is the address space of one linear memory: its whole maximum,
// of which only what the guest touches becomes resident.
type reservation struct {
	buf      []byte // the whole reservation
	writable uint64 // buf[:writable] is committed
	warm     uint64 // while idle: the bytes of buf that are resident (and zero)
	// kept bounds the pages kept warm when it was last returned: no page of
	// buf[kept:] is resident until a guest touches it.
	kept uint64
}

func newMemoryPool(maxReserved, maxResident uint64, idleAfter time.Duration) *memoryPool {
	return &memoryPool{maxReserved: maxReserved, maxResident: maxResident, idleAfter: idleAfter,
		idle: make(map[uint64][]*reservation)}
}

// get returns an idle reservation of size bytes, or a new one.
func (p *memoryPool) get(size uint64) (*reservation, error) {
	p.mu.Lock()
	if rs := p.idle[size]; len(rs) > 0 {
		r := rs[len(rs)-1]
		if len(rs) == 1 {
			delete(p.idle, size)
		} else {
			p.idle[size] = rs[:len(rs)-1]
		}
		p.reserved -= size
		p.resident -= r.warm
		p.mu.Unlock()
		r.warm = 0
		return r, nil
	}
	p.mu.Unlock()
	buf, err := reserve(size)
	if err != nil {
		return nil, err
	}
	return &reservation{buf: buf}, nil
}

// put returns r, whose first used bytes may be dirty, to the pool, or unmaps
// it when the pool has no room for it.
func (p *memoryPool) put(r *reservation, used uint64) {
	size := uint64(len(r.buf))
	// Pages past used may still be warm from an earlier call.
	end := max(used, r.kept)
	// Count r, and the most it may keep warm, before zeroing it, so that
	// concurrent puts never take the pool past its budgets.
	p.mu.Lock()
	pooled := !p.closed && p.reserved+size <= p.maxReserved
	var allowed uint64 // whole Wasm pages, which are whole system pages too
	if pooled {
		allowed = min(end, p.maxResident-p.resident) &^ (pageSize - 1)
		p.reserved += size
		p.resident += allowed
	}
	p.mu.Unlock()
	if !pooled {
		unreserve(r.buf)
		return
	}
	var err error
	var warm uint64
	if allowed == end && end <= smallMemory {
		// Small enough to zero without asking which pages are resident.
		clear(r.buf[:used])
		warm = end
	} else {
		warm, err = zeroResident(r.buf[:allowed], used)
	}
	if err == nil {
		err = decommit(r.buf[allowed:end])
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resident -= allowed
	if err != nil || p.closed {
		p.reserved -= size
		unreserve(r.buf)
		return
	}
	r.warm, r.kept = warm, allowed
	p.resident += warm
	p.idle[size] = append(p.idle[size], r)
	if p.idleAfter > 0 {
		if p.timer == nil {
			p.timer = time.AfterFunc(p.idleAfter, p.trim)
		} else {
			p.timer.Reset(p.idleAfter)
		}
	}
}

// trim gives back the warm pages of the idle reservations, and asks the Go
// runtime to return the heap the calls freed: a pool that has seen no call
// for a while holds address space only.
func (p *memoryPool) trim() {
	p.mu.Lock()
	for _, rs := range p.idle {
		for _, r := range rs {
			if r.warm == 0 {
				continue
			}
			if decommit(r.buf[:r.kept]) != nil {
				continue // still zero, still counted
			}
			p.resident -= r.warm
			r.warm, r.kept = 0, 0
		}
	}
	hook := p.trimmed
	p.mu.Unlock()
	debug.FreeOSMemory()
	if hook != nil {
		hook()
	}
}

// close unmaps the idle reservations; reservations returned later are
// unmapped as they come.
func (p *memoryPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.reserved, p.resident, p.closed = nil, 0, 0, true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	for _, rs := range idle {
		for _, r := range rs {
			unreserve(r.buf)
		}
	}
}

// callMemory is the experimental.MemoryAllocator of one call. It hands out
// pooled memories and remembers them, so that after the call it can tell how
// much memory the call used and whether a memory reached its maximum.
type callMemory struct {
	pool     *memoryPool
	memories []*linearMemory
}

func (c *callMemory) Allocate(capHint, maxBytes uint64) experimental.LinearMemory {
	m := &linearMemory{pool: c.pool, max: maxBytes}
	if r, err := c.pool.get(maxBytes); err == nil {
		m.r = r
	} else {
		m.buf = make([]byte, 0, max(capHint, pageSize))
	}
	c.memories = append(c.memories, m)
	return m
}

// peak is the largest size any memory of the call reached, in bytes.
func (c *callMemory) peak() (peak uint64, atMax bool) {
	for _, m := range c.memories {
		peak = max(peak, m.used)
		// A memory that cannot grow by one more page is at its limit.
		atMax = atMax || m.used+pageSize > m.max
	}
	return peak, atMax
}

// linearMemory is one Wasm linear memory: a pooled reservation, or, if none
// could be mapped, a Go heap buffer that grows by copying.
type linearMemory struct {
	pool *memoryPool
	r    *reservation
	buf  []byte // without r: the heap buffer
	max  uint64
	used uint64 // high-water mark of the memory's size: the bytes that may be dirty
}

func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if r := m.r; r != nil {
		if size > r.writable {
			if commit(r.buf[r.writable:size]) != nil {
				return nil
			}
			r.writable = size
		}
		m.used = max(m.used, size)
		return r.buf[:size:size]
	}
	if size > uint64(cap(m.buf)) {
		grown := make([]byte, size, min(2*size, m.max))
		copy(grown, m.buf)
		m.buf = grown
	}
	m.buf = m.buf[:size]
	m.used = max(m.used, size)
	return m.buf
}

func (m *linearMemory) Free() {
	if m.r != nil {
		m.pool.put(m.r, m.used)
		m.r = nil
	}
	m.buf = nil
}
