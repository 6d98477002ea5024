package wasmbin

import "fmt"

// The instruction decoder: it finds where each instruction ends, for every
// instruction of WebAssembly 2.0's core features, and refuses the rest.

// imm is the shape of an instruction's immediates.
type imm uint8

const (
	immNone       imm = iota + 1
	immU32            // an index or a reserved zero
	immU32x2          // two indices (call_indirect, table.copy, table.init, memory.copy)
	immMemArg         // align, offset
	immI32            // i32.const
	immI64            // i64.const
	immF32            // 4 bytes
	immF64            // 8 bytes
	immBlock          // a block type
	immBrTable        // a vector of labels and the default
	immSelectT        // a vector of value types
	immRefType        // ref.null
	immMemArgLane     // align, offset, lane
	immLane           // one lane byte
	immV128           // 16 bytes: v128.const, i8x16.shuffle
)

// opImm gives the immediates of each single-byte opcode; zero is an opcode
// Meter does not accept.
var opImm = func() (t [256]imm) {
	set := func(lo, hi int, k imm) {
		for op := lo; op <= hi; op++ {
			t[op] = k
		}
	}
	set(0x00, 0x01, immNone)   // unreachable, nop
	set(0x02, 0x04, immBlock)  // block, loop, if
	t[0x05] = immNone          // else
	t[0x0b] = immNone          // end
	set(0x0c, 0x0d, immU32)    // br, br_if
	t[0x0e] = immBrTable       // br_table
	t[0x0f] = immNone          // return
	t[0x10] = immU32           // call
	t[0x11] = immU32x2         // call_indirect
	set(0x1a, 0x1b, immNone)   // drop, select
	t[0x1c] = immSelectT       // select t*
	set(0x20, 0x26, immU32)    // local.*, global.*, table.get/set
	set(0x28, 0x3e, immMemArg) // loads and stores
	set(0x3f, 0x40, immU32)    // memory.size, memory.grow
	t[0x41] = immI32           // i32.const
	t[0x42] = immI64           // i64.const
	t[0x43] = immF32           // f32.const
	t[0x44] = immF64           // f64.const
	set(0x45, 0xc4, immNone)   // numeric and sign-extension instructions
	t[0xd0] = immRefType       // ref.null
	t[0xd1] = immNone          // ref.is_null
	t[0xd2] = immU32           // ref.func
	return t
}()

// miscImm gives the immediates of the 0xFC-prefixed instructions.
var miscImm = [...]imm{
	0: immNone, 1: immNone, 2: immNone, 3: immNone, // i32.trunc_sat_*
	4: immNone, 5: immNone, 6: immNone, 7: immNone, // i64.trunc_sat_*
	8:  immU32x2, // memory.init data, memory
	9:  immU32,   // data.drop
	10: immU32x2, // memory.copy
	11: immU32,   // memory.fill
	12: immU32x2, // table.init elem, table
	13: immU32,   // elem.drop
	14: immU32x2, // table.copy
	15: immU32,   // table.grow
	16: immU32,   // table.size
	17: immU32,   // table.fill
}

// simdImm gives the immediates of the 0xFD-prefixed (fixed-width SIMD)
// instructions. The opcodes the proposal leaves unassigned are refused.
var simdImm = func() (t [256]imm) {
	for op := range t {
		t[op] = immNone
	}
	for op := 0x00; op <= 0x0b; op++ { // v128.load*, v128.store
		t[op] = immMemArg
	}
	t[0x0c] = immV128                  // v128.const
	t[0x0d] = immV128                  // i8x16.shuffle
	for op := 0x15; op <= 0x22; op++ { // extract_lane, replace_lane
		t[op] = immLane
	}
	for op := 0x54; op <= 0x5b; op++ { // v128.load*_lane, v128.store*_lane
		t[op] = immMemArgLane
	}
	t[0x5c], t[0x5d] = immMemArg, immMemArg // v128.load32_zero, v128.load64_zero
	for _, op := range []int{0x9a, 0xa2, 0xa5, 0xa6, 0xaf, 0xb0, 0xb2, 0xb3, 0xb4, 0xbb,
		0xc2, 0xc5, 0xc6, 0xcf, 0xd0, 0xd2, 0xd3, 0xd4, 0xe2, 0xee} {
		t[op] = 0
	}
	return t
}()

// skipInstr skips the immediates of the instruction whose opcode byte op
// was just read.
func (r *reader) skipInstr(op byte) error {
	k := opImm[op]
	switch op {
	case 0xfc:
		sub, err := r.u32()
		if err != nil {
			return err
		}
		if int(sub) >= len(miscImm) || miscImm[sub] == 0 {
			return fmt.Errorf("%w: instruction 0xfc %d", ErrUnsupported, sub)
		}
		k = miscImm[sub]
	case 0xfd:
		sub, err := r.u32()
		if err != nil {
			return err
		}
		if int(sub) >= len(simdImm) || simdImm[sub] == 0 {
			return fmt.Errorf("%w: instruction 0xfd %d", ErrUnsupported, sub)
		}
		k = simdImm[sub]
	}
	return r.skipImm(op, k)
}

func (r *reader) skipImm(op byte, k imm) error {
	var err error
	switch k {
	case immNone:
	case immU32:
		_, err = r.u32()
	case immU32x2:
		if _, err = r.u32(); err == nil {
			_, err = r.u32()
		}
	case immMemArg, immMemArgLane:
		var align uint32
		if align, err = r.u32(); err != nil {
			return err
		}
		if align >= 0x40 { // multi-memory's memory index flag, or invalid
			return fmt.Errorf("%w: memory alignment %#x", ErrUnsupported, align)
		}
		if _, err = r.u32(); err == nil && k == immMemArgLane {
			_, err = r.byte()
		}
	case immI32:
		err = r.skipSLEB(32)
	case immI64:
		err = r.skipSLEB(64)
	case immF32:
		_, err = r.bytes(4)
	case immF64:
		_, err = r.bytes(8)
	case immBlock:
		err = r.skipBlockType()
	case immBrTable:
		var n uint32
		if n, err = r.count(); err != nil {
			return err
		}
		for range n + 1 {
			if _, err = r.u32(); err != nil {
				return err
			}
		}
	case immSelectT:
		_, err = r.valTypes()
	case immRefType:
		err = r.skipRefType()
	case immLane:
		_, err = r.byte()
	case immV128:
		_, err = r.bytes(16)
	default:
		err = fmt.Errorf("%w: opcode %#x", ErrUnsupported, op)
	}
	return err
}

// Value types of WebAssembly 2.0.
func isValType(b byte) bool {
	switch b {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f: // i32 i64 f32 f64 v128 funcref externref
		return true
	}
	return false
}

// skipBlockType skips a block type: empty (0x40), a value type, or a type
// index (a positive s33).
func (r *reader) skipBlockType() error {
	if r.off >= len(r.b) {
		return fmt.Errorf("%w: unexpected end", ErrMalformed)
	}
	if b := r.b[r.off]; b == 0x40 || isValType(b) {
		r.off++
		return nil
	} else if b&0xc0 == 0x40 { // a one-byte negative s33: no such type
		return fmt.Errorf("%w: block type %#x", ErrUnsupported, b)
	}
	idx, err := r.uleb(32)
	if err == nil && idx >= 1<<31 {
		err = fmt.Errorf("%w: block type index %d", ErrMalformed, idx)
	}
	return err
}

// skipSLEB skips a signed LEB128 of at most bits bits.
func (r *reader) skipSLEB(bits int) error {
	for i := 0; i < (bits+6)/7; i++ {
		c, err := r.byte()
		if err != nil {
			return err
		}
		if c&0x80 == 0 {
			return nil
		}
	}
	return fmt.Errorf("%w: LEB128 too long", ErrMalformed)
}

// count reads a vector length, refusing one that cannot fit in what is left
// (every element takes at least a byte).
func (r *reader) count() (uint32, error) {
	n, err := r.u32()
	if err == nil && int64(n) > int64(len(r.b)-r.off) {
		err = fmt.Errorf("%w: count %d exceeds its section", ErrMalformed, n)
	}
	return n, err
}

// done fails unless the whole of r was read.
func (r *reader) done(what string) error {
	if r.off != len(r.b) {
		return fmt.Errorf("%w: %d trailing bytes in %s section", ErrMalformed, len(r.b)-r.off, what)
	}
	return nil
}

// valTypes reads a vector of value types.
func (r *reader) valTypes() ([]byte, error) {
	n, err := r.count()
	if err != nil {
		return nil, err
	}
	b, err := r.bytes(int(n))
	if err != nil {
		return nil, err
	}
	for _, t := range b {
		if !isValType(t) {
			return nil, fmt.Errorf("%w: value type %#x", ErrUnsupported, t)
		}
	}
	return b, nil
}

// locals reads a function body's local declarations and returns how many
// locals they declare.
func (r *reader) locals() (uint64, error) {
	n, err := r.count()
	if err != nil {
		return 0, err
	}
	var total uint64
	for range n {
		k, err := r.u32()
		if err != nil {
			return 0, err
		}
		t, err := r.byte()
		if err != nil {
			return 0, err
		}
		if !isValType(t) {
			return 0, fmt.Errorf("%w: local type %#x", ErrUnsupported, t)
		}
		total += uint64(k)
	}
	return total, nil
}
