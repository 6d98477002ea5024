package wasmbin

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
)

const (
	dataSectionID      = 11
	dataCountSectionID = 12
)

// Segment is an active data segment of memory 0 at a constant offset.
type Segment struct {
	Offset uint32
	Init   []byte
}

// MergeData returns a copy of wasm in which active data segments fewer than
// maxGap bytes apart are merged into one, the gap filled with zeros, which is
// what a fresh memory holds there. A runtime copies every segment into every
// new instance, and keeps a record of each: Go's linker emits tens of
// thousands of small segments, so merging them makes an instance cheaper to
// create and smaller. With maxGap at most the system's page size, the zeros
// touch no page that the segments do not touch already.
//
// Only modules that cannot tell the difference are rewritten: every segment
// active, for memory 0, at an i32.const offset, and no two overlapping (so
// the order they are copied in does not matter: the merged segments are in
// increasing order); no data count section (so no instruction names a
// segment); no imported memory (whose gaps need not be zero). Any other
// module, or one with nothing to merge, is returned as it is.
func MergeData(wasm []byte, maxGap int) ([]byte, error) {
	sec, start, end, err := findSection(wasm, dataSectionID)
	if err != nil || sec == nil {
		return wasm, err
	}
	if dc, _, _, err := findSection(wasm, dataCountSectionID); err != nil || dc != nil {
		return wasm, err
	}
	imports, err := Imports(wasm)
	if err != nil {
		return nil, err
	}
	for _, imp := range imports {
		if imp.Kind == KindMemory {
			return wasm, nil
		}
	}
	segs, ok, err := activeSegments(sec)
	if err != nil || !ok {
		return wasm, err
	}
	slices.SortStableFunc(segs, func(a, b Segment) int { return cmp.Compare(a.Offset, b.Offset) })
	for i := 1; i < len(segs); i++ {
		if prev := segs[i-1]; uint64(prev.Offset)+uint64(len(prev.Init)) > uint64(segs[i].Offset) {
			return wasm, nil // overlapping: the order they are copied in matters
		}
	}
	merged := make([]Segment, 0, len(segs))
	for _, s := range segs {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if gap := uint64(s.Offset) - uint64(last.Offset) - uint64(len(last.Init)); gap < uint64(maxGap) {
				last.Init = append(last.Init, make([]byte, gap)...)
				last.Init = append(last.Init, s.Init...)
				continue
			}
		}
		s.Init = append([]byte(nil), s.Init...)
		merged = append(merged, s)
	}
	if len(merged) == len(segs) {
		return wasm, nil
	}
	var body []byte
	body = binary.AppendUvarint(body, uint64(len(merged)))
	for _, s := range merged {
		body = append(body, 0x00, 0x41) // active, memory 0; i32.const
		body = appendSleb(body, int64(int32(s.Offset)))
		body = append(body, 0x0b) // end
		body = binary.AppendUvarint(body, uint64(len(s.Init)))
		body = append(body, s.Init...)
	}
	out := make([]byte, 0, len(wasm)-len(sec)+len(body)+8)
	out = append(out, wasm[:start]...)
	out = append(out, dataSectionID)
	out = binary.AppendUvarint(out, uint64(len(body)))
	out = append(out, body...)
	out = append(out, wasm[end:]...)
	return out, nil
}

// dataSegments lists the segments of the module's data section, in order;
// ok is false if any segment is not an active segment of memory 0 at an
// i32.const offset.
func dataSegments(wasm []byte) (segs []Segment, ok bool, err error) {
	sec, _, _, err := findSection(wasm, dataSectionID)
	if err != nil || sec == nil {
		return nil, true, err
	}
	return activeSegments(sec)
}

func activeSegments(sec []byte) (segs []Segment, ok bool, err error) {
	r := reader{b: sec}
	n, err := r.u32()
	if err != nil {
		return nil, false, err
	}
	if uint64(n) > uint64(len(sec)) { // each segment takes at least 3 bytes
		return nil, false, fmt.Errorf("%w: data segment count %d exceeds section size", ErrMalformed, n)
	}
	segs = make([]Segment, 0, n)
	for range n {
		flags, err := r.u32()
		if err != nil {
			return nil, false, err
		}
		if flags != 0 {
			return nil, false, nil // passive, or with an explicit memory index
		}
		op, err := r.byte()
		if err != nil {
			return nil, false, err
		}
		if op != 0x41 {
			return nil, false, nil // not i32.const
		}
		off, err := r.sleb32()
		if err != nil {
			return nil, false, err
		}
		if op, err = r.byte(); err != nil {
			return nil, false, err
		}
		if op != 0x0b {
			return nil, false, nil // an extended constant expression
		}
		size, err := r.u32()
		if err != nil {
			return nil, false, err
		}
		init, err := r.bytes(int(size))
		if err != nil {
			return nil, false, err
		}
		segs = append(segs, Segment{Offset: uint32(off), Init: init})
	}
	if r.off != len(sec) {
		return nil, false, fmt.Errorf("%w: %d trailing bytes in data section", ErrMalformed, len(sec)-r.off)
	}
	return segs, true, nil
}

// sleb32 reads a signed LEB128 of at most 32 bits.
func (r *reader) sleb32() (int32, error) {
	var v int64
	for shift := uint(0); ; shift += 7 {
		if shift >= 35 {
			return 0, fmt.Errorf("%w: LEB128 too long", ErrMalformed)
		}
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= int64(c&0x7f) << shift
		if c&0x80 == 0 {
			if shift < 57 && c&0x40 != 0 {
				v |= -1 << (shift + 7) // sign-extend
			}
			if v != int64(int32(v)) {
				return 0, fmt.Errorf("%w: LEB128 overflows 32 bits", ErrMalformed)
			}
			return int32(v), nil
		}
	}
}

func appendSleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
