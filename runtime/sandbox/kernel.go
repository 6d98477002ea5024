package sandbox

import (
	"encoding/binary"

	"github.com/contractual/contractual/internal/errs"
)

// kernel is a native implementation of the Extism kernel (EIP-007): the
// memory a module uses to pass its input, output, errors and host-function
// arguments. Offsets index one arena of bytes outside the module's own
// memory; the module reaches it only through the kernel functions. Every
// call gets a fresh kernel, so nothing in it outlives the call.
//
// The go-sdk runs the kernel as a second Wasm module and forwards every
// kernel call to it from Go, which costs a goroutine per kernel call once
// calls are interruptible; see RATIONALE.md, "Sandbox".
type kernel struct {
	c      *call
	mem    []byte
	limit  uint64
	blocks map[uint64]block
	freed  []uint64 // freed blocks, reused first-fit

	input, inputLen   uint64
	output, outputLen uint64
	errOff            uint64
}

type block struct {
	length, capacity uint64
	free             bool
}

// kernelBase keeps offset 0 (Extism's null) out of the arena.
const kernelBase = 8

// maxFreeList bounds the free blocks remembered for reuse.
const maxFreeList = 256

func newKernel(c *call, limit uint64) *kernel {
	k := &kernel{c: c, limit: limit, blocks: make(map[uint64]block)}
	k.mem = make([]byte, kernelBase, 4096)
	return k
}

// alloc returns a new block of n bytes, or 0 when the memory limit leaves no
// room (the Extism contract: callers must check).
func (k *kernel) alloc(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	for i, off := range k.freed {
		if b := k.blocks[off]; b.capacity >= n {
			k.freed = append(k.freed[:i], k.freed[i+1:]...)
			clear(k.mem[off : off+n])
			k.blocks[off] = block{length: n, capacity: b.capacity}
			return off
		}
	}
	off := (uint64(len(k.mem)) + 7) &^ 7
	end := off + n
	if end > k.limit || end < off {
		return 0
	}
	if end > uint64(cap(k.mem)) {
		grown := make([]byte, end, min(max(2*end, 4096), k.limit))
		copy(grown, k.mem)
		k.mem = grown
	}
	k.mem = k.mem[:end]
	k.blocks[off] = block{length: n, capacity: n}
	return off
}

func (k *kernel) free(off uint64) {
	b, ok := k.blocks[off]
	if !ok || b.free {
		return
	}
	b.free = true
	k.blocks[off] = b
	if len(k.freed) < maxFreeList {
		k.freed = append(k.freed, off)
	}
}

// length is the length of the live block at off, or 0.
func (k *kernel) length(off uint64) uint64 {
	if b, ok := k.blocks[off]; ok && !b.free {
		return b.length
	}
	return 0
}

// bytes returns the live block at off; fn names the caller in the error.
func (k *kernel) bytes(fn string, off uint64) []byte {
	n := k.length(off)
	if n == 0 {
		if _, ok := k.blocks[off]; !ok && off != 0 {
			k.c.abort(errs.E(errs.ToolFailed, "%s: offset %d is not an allocated block", fn, off))
		}
		return nil
	}
	return k.mem[off : off+n]
}

// span checks that [off, off+n) lies in the arena.
func (k *kernel) span(fn string, off, n uint64) {
	if off < kernelBase || off+n > uint64(len(k.mem)) || off+n < off {
		k.c.abort(errs.E(errs.ToolFailed, "%s: kernel memory access out of bounds (offset %d, %d bytes)", fn, off, n))
	}
}

func (k *kernel) loadU8(off uint64) uint32 {
	k.span("load_u8", off, 1)
	return uint32(k.mem[off])
}

func (k *kernel) storeU8(off uint64, v uint32) {
	k.span("store_u8", off, 1)
	k.mem[off] = byte(v)
}

func (k *kernel) loadU64(off uint64) uint64 {
	k.span("load_u64", off, 8)
	return binary.LittleEndian.Uint64(k.mem[off:])
}

func (k *kernel) storeU64(off, v uint64) {
	k.span("store_u64", off, 8)
	binary.LittleEndian.PutUint64(k.mem[off:], v)
}

func (k *kernel) inputLoadU8(i uint64) uint32 {
	if i >= k.inputLen {
		k.c.abort(errs.E(errs.ToolFailed, "input_load_u8: index %d past the input's %d bytes", i, k.inputLen))
	}
	return uint32(k.mem[k.input+i])
}

func (k *kernel) inputLoadU64(i uint64) uint64 {
	if i+8 > k.inputLen || i+8 < i {
		k.c.abort(errs.E(errs.ToolFailed, "input_load_u64: index %d past the input's %d bytes", i, k.inputLen))
	}
	return binary.LittleEndian.Uint64(k.mem[k.input+i:])
}

// setInput copies the call's input into a new block.
func (k *kernel) setInput(input []byte) bool {
	k.input, k.inputLen = 0, uint64(len(input))
	if len(input) == 0 {
		return true
	}
	k.input = k.alloc(uint64(len(input)))
	if k.input == 0 {
		return false
	}
	copy(k.mem[k.input:], input)
	return true
}

func (k *kernel) setOutput(off, n uint64) {
	if n > 0 {
		k.span("output_set", off, n)
	}
	k.output, k.outputLen = off, n
}

// outputBytes is the output the module set; it aliases the arena.
func (k *kernel) outputBytes() []byte {
	if k.outputLen == 0 {
		return nil
	}
	return k.mem[k.output : k.output+k.outputLen]
}

// errorMessage is the message the module set with error_set, if any.
func (k *kernel) errorMessage() string {
	if k.errOff == 0 {
		return ""
	}
	return string(k.bytes("error_set", k.errOff))
}

func (k *kernel) reset() {
	k.mem = k.mem[:kernelBase]
	clear(k.blocks)
	k.freed = k.freed[:0]
	k.input, k.inputLen, k.output, k.outputLen, k.errOff = 0, 0, 0, 0, 0
}
