package sandbox

import (
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// reserveLimit is the largest memory whose whole maximum is reserved up
// front; larger ones grow by copying. Reserving keeps a growing memory in
// place, and the Go runtime backs big allocations with lazily committed pages.
const reserveLimit = 256 << 20

// maxIdle bounds the idle buffers a pool keeps per capacity: enough for the
// calls of a busy module running at once, not a cache of every peak.
const maxIdle = 8

// memoryPool recycles the backing arrays of linear memories between calls of
// one module, so that a fresh instance per call does not cost a fresh
// allocation of every memory. A buffer goes back to the pool only after the
// bytes its last user touched are zeroed: no call ever sees another's data.
// Unlike a sync.Pool, it does not empty at every garbage collection, which
// would turn each GC into a burst of large allocations (and more GC).
type memoryPool struct {
	mu   sync.Mutex
	idle map[uint64][][]byte // by capacity
}

func (p *memoryPool) get(capacity uint64) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if bufs := p.idle[capacity]; len(bufs) > 0 {
		b := bufs[len(bufs)-1]
		p.idle[capacity] = bufs[:len(bufs)-1]
		return b
	}
	return make([]byte, 0, capacity)
}

// put returns b, whose first used bytes may be dirty, to the pool.
func (p *memoryPool) put(b []byte, used uint64) {
	clear(b[:used])
	b = b[:0]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = make(map[uint64][][]byte)
	}
	if bufs := p.idle[uint64(cap(b))]; len(bufs) < maxIdle {
		p.idle[uint64(cap(b))] = append(bufs, b)
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
	reserve := maxBytes
	if reserve > reserveLimit {
		reserve = max(capHint, pageSize)
	}
	m := &linearMemory{pool: c.pool, buf: c.pool.get(reserve), max: maxBytes}
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

// linearMemory is one pooled Wasm linear memory.
type linearMemory struct {
	pool *memoryPool
	buf  []byte
	max  uint64
	used uint64 // high-water mark of len(buf): the bytes that may be dirty
}

func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size > uint64(cap(m.buf)) {
		grown := make([]byte, size, min(max(2*size, size), m.max))
		copy(grown, m.buf)
		m.pool.put(m.buf, m.used)
		m.buf, m.used = grown, size
		return m.buf
	}
	m.buf = m.buf[:size]
	m.used = max(m.used, size)
	return m.buf
}

func (m *linearMemory) Free() {
	if m.buf == nil {
		return
	}
	m.pool.put(m.buf, m.used)
	m.buf = nil
}
