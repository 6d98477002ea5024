package wasmbin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Metering configures Meter.
type Metering struct {
	// Module and Name name the function import Meter adds, of type
	// (reason i32) -> i32. The guest calls it with TickFuel when its fuel
	// runs out, and uses the result as its new fuel; it calls it with
	// TickStack when a call would take its call stack past its budget, and
	// the function must then not return (it ends the call).
	Module, Name string
	// Fuel is the guest's fuel at instantiation, and the most a single
	// check may see consumed before it calls tick: about one unit per
	// instruction (see Meter). At least 1.
	Fuel int32
	// Stack is the call-stack budget in bytes, charged with FrameSize for
	// every call of a function the module defines. At least 1.
	Stack int32
}

// The reasons the metered guest passes to the tick function.
const (
	TickFuel  int32 = 0
	TickStack int32 = 1
)

// ErrUnsupported is wrapped by Meter's errors about a module that may be
// valid WebAssembly but uses something Meter does not instrument (an
// instruction or section of a proposal outside WebAssembly 2.0's core
// features). Meter fails closed: it never passes on code it cannot read.
var ErrUnsupported = errors.New("unsupported wasm feature")

// Frame-size estimate, in bytes: frameBase plus frameSlot for every
// parameter, result and local. See FrameSize.
const (
	frameBase = 64
	frameSlot = 16
	maxCost   = 1 << 28 // caps one site's charge, so sums never overflow an i32
)

// FrameSize is the static estimate of the call-stack bytes one activation of
// a function takes: a fixed part (return address, saved frame pointer, the
// compiler's stack-check area and callee-saved registers) plus a 16-byte slot
// (the size of the largest value, v128) for each parameter, result and local.
// wazero's optimizing compiler keeps values in registers and spills what is
// live across a call, so its real frames are bounded by the same terms plus
// the operand-stack values live across calls, which the estimate does not
// see; the sandbox measures the ratio on real modules (see the package
// runtime/sandbox).
func FrameSize(params, results int, locals uint64) int32 {
	n := uint64(params) + uint64(results) + locals
	if n > (maxCost-frameBase)/frameSlot {
		return maxCost
	}
	return int32(frameBase + frameSlot*n)
}

// Meter returns a copy of wasm instrumented so that the host regains
// control at bounded intervals and bounds the guest's call stack:
//
//   - Fuel. A new mutable i32 global holds the guest's fuel. At the entry of
//     every function the module defines, and at the head of every loop, the
//     guest subtracts a static cost — the number of instructions of the
//     function outside its loops, resp. of the loop's body outside its inner
//     loops — and when the fuel is no longer positive, calls tick(TickFuel)
//     and takes its result as the new fuel. Every execution path that does not
//     end is a loop or a recursion, so between two calls of tick the guest
//     executes at most about Fuel + the largest cost instructions (plus host
//     calls and bulk memory operations, which are bounded by their own means).
//   - Call stack. A second global holds the call-stack budget in bytes. Before
//     every call of a function the module defines, the guest subtracts the
//     callee's FrameSize (for call_indirect, the largest over the defined
//     functions of that type), and calls tick(TickStack) if the budget is
//     then negative; after the call returns, it adds it back.
//
// Adding the import shifts the index of every function the module defines,
// so Meter renumbers every function index: call and ref.func immediates,
// exports, the start function, element segments, global initializers and
// the name section (whose label names, which the instrumentation would
// shift, are dropped). DWARF custom sections (.debug_*), whose code offsets
// the instrumentation invalidates, are dropped. The added globals come last
// in the global index space; the inserted code is self-contained if … end
// blocks, so branch depths are unchanged. Every other byte is copied as is.
//
// Meter decodes every instruction of WebAssembly 2.0 (MVP, sign extension,
// non-trapping conversions, multi-value, bulk memory, reference types and
// fixed-width SIMD); a module with anything else is refused with
// ErrUnsupported. A module that does not parse is refused with ErrMalformed.
func Meter(wasm []byte, cfg Metering) ([]byte, error) {
	if cfg.Fuel < 1 || cfg.Stack < 1 {
		return nil, fmt.Errorf("wasmbin: Meter needs a positive fuel and stack budget")
	}
	m, err := parseModule(wasm)
	if err != nil {
		return nil, err
	}
	return m.meter(cfg)
}

// Section ids of the core specification.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
)

// sectionOrder is the position of each non-custom section in a module.
var sectionOrder = [...]int{
	secType: 1, secImport: 2, secFunction: 3, secTable: 4, secMemory: 5, secGlobal: 6,
	secExport: 7, secStart: 8, secElement: 9, secDataCount: 10, secCode: 11, secData: 12,
}

type rawSection struct {
	id   byte
	body []byte
}

type funcType struct{ params, results []byte }

// key identifies the type structurally: call_indirect matches types by
// structure, not index.
func (t funcType) key() string { return string(t.params) + "\x00" + string(t.results) }

// module is what Meter needs to know of a module.
type module struct {
	sections      []rawSection
	types         []funcType
	imports       []Import
	importedFuncs uint32
	globals       uint32   // imported and defined
	funcTypes     []uint32 // type index of each defined function
}

func parseModule(wasm []byte) (*module, error) {
	if _, _, _, err := findSection(wasm, 0xff); err != nil { // checks the header and framing
		return nil, err
	}
	m := &module{}
	r := reader{b: wasm, off: 8}
	last := 0
	for r.off < len(r.b) {
		id, _ := r.byte()
		size, _ := r.u32()
		body, _ := r.bytes(int(size))
		if id != secCustom {
			if int(id) >= len(sectionOrder) || sectionOrder[id] == 0 {
				return nil, fmt.Errorf("%w: section id %d", ErrUnsupported, id)
			}
			if sectionOrder[id] <= last {
				return nil, fmt.Errorf("%w: section %d out of order or repeated", ErrMalformed, id)
			}
			last = sectionOrder[id]
		}
		m.sections = append(m.sections, rawSection{id, body})
		var err error
		switch id {
		case secType:
			m.types, err = parseTypes(body)
		case secImport:
			m.imports, err = parseImports(body)
			for _, imp := range m.imports {
				switch imp.Kind {
				case KindFunc:
					m.importedFuncs++
				case KindGlobal:
					m.globals++
				case KindTag:
					err = fmt.Errorf("%w: tag import %s", ErrUnsupported, imp)
				}
			}
		case secFunction:
			m.funcTypes, err = parseU32s(body)
		case secGlobal:
			var n uint32
			n, err = (&reader{b: body}).u32()
			m.globals += n
		}
		if err != nil {
			return nil, err
		}
	}
	for _, t := range m.funcTypes {
		if int(t) >= len(m.types) {
			return nil, fmt.Errorf("%w: function type %d out of range", ErrMalformed, t)
		}
	}
	return m, nil
}

func parseTypes(sec []byte) ([]funcType, error) {
	r := reader{b: sec}
	n, err := r.count()
	if err != nil {
		return nil, err
	}
	types := make([]funcType, 0, n)
	for range n {
		form, err := r.byte()
		if err != nil {
			return nil, err
		}
		if form != 0x60 {
			return nil, fmt.Errorf("%w: type form %#x", ErrUnsupported, form)
		}
		var t funcType
		if t.params, err = r.valTypes(); err != nil {
			return nil, err
		}
		if t.results, err = r.valTypes(); err != nil {
			return nil, err
		}
		types = append(types, t)
	}
	return types, r.done("type")
}

func parseU32s(sec []byte) ([]uint32, error) {
	r := reader{b: sec}
	n, err := r.count()
	if err != nil {
		return nil, err
	}
	out := make([]uint32, n)
	for i := range out {
		if out[i], err = r.u32(); err != nil {
			return nil, err
		}
	}
	return out, r.done("function")
}

// metering is the state of one Meter rewrite.
type metering struct {
	*module
	cfg         Metering
	tick        uint32  // function index of the tick import
	fuel, stack uint32  // global indices
	frames      []int32 // FrameSize of each defined function
	typeFrames  map[string]int32
}

// fn renumbers a function index.
func (m *metering) fn(idx uint32) uint32 {
	if idx >= m.importedFuncs {
		return idx + 1
	}
	return idx
}

func (m *module) meter(cfg Metering) ([]byte, error) {
	mt := &metering{module: m, cfg: cfg, tick: m.importedFuncs, fuel: m.globals, stack: m.globals + 1}
	if err := mt.frameSizes(); err != nil {
		return nil, err
	}
	tickType := uint32(len(m.types))
	have := map[byte]bool{}
	for _, s := range m.sections {
		have[s.id] = true
	}
	// Sections Meter must add to, created empty where missing.
	var sections []rawSection
	for _, id := range []byte{secType, secImport, secGlobal} {
		if !have[id] {
			sections = append(sections, rawSection{id, []byte{0}})
		}
	}
	for _, s := range m.sections {
		if s.id == secCustom {
			sections = append(sections, s)
			continue
		}
		// Keep the added sections in order: insert before the first later one.
		i := len(sections)
		for i > 0 && sections[i-1].id != secCustom && sectionOrder[sections[i-1].id] > sectionOrder[s.id] {
			i--
		}
		sections = append(sections[:i], append([]rawSection{s}, sections[i:]...)...)
	}

	out := append(append([]byte(nil), magic...), version...)
	for _, s := range sections {
		body, keep, err := mt.section(s, tickType)
		if err != nil {
			return nil, err
		}
		if !keep {
			continue
		}
		out = append(out, s.id)
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	return out, nil
}

// frameSizes computes FrameSize for every defined function, and the largest
// per function type, from the code section's local declarations.
func (m *metering) frameSizes() error {
	var code []byte
	for _, s := range m.sections {
		if s.id == secCode {
			code = s.body
		}
	}
	m.frames = make([]int32, len(m.funcTypes))
	m.typeFrames = make(map[string]int32)
	r := reader{b: code}
	n := uint32(0)
	if code != nil {
		var err error
		if n, err = r.count(); err != nil {
			return err
		}
	}
	if int(n) != len(m.funcTypes) {
		return fmt.Errorf("%w: %d function bodies for %d functions", ErrMalformed, n, len(m.funcTypes))
	}
	for i := range n {
		size, err := r.u32()
		if err != nil {
			return err
		}
		body, err := r.bytes(int(size))
		if err != nil {
			return err
		}
		br := reader{b: body}
		locals, err := br.locals()
		if err != nil {
			return err
		}
		t := m.types[m.funcTypes[i]]
		f := FrameSize(len(t.params), len(t.results), locals)
		m.frames[i] = f
		m.typeFrames[t.key()] = max(m.typeFrames[t.key()], f)
	}
	return r.done("code")
}

// section returns the rewritten body of s, or keep false to drop it.
func (m *metering) section(s rawSection, tickType uint32) (body []byte, keep bool, err error) {
	r := reader{b: s.body}
	switch s.id {
	case secCustom:
		name, err := r.name()
		if err != nil {
			return nil, false, err
		}
		switch {
		case strings.HasPrefix(name, ".debug_"):
			return nil, false, nil
		case name == "name":
			body, ok := m.names(s.body[r.off:])
			if !ok {
				return nil, false, nil // debug information only; a bad one is dropped
			}
			return append(appendName(nil, name), body...), true, nil
		}
		return s.body, true, nil
	case secType:
		n, err := r.count()
		if err != nil {
			return nil, false, err
		}
		out := binary.AppendUvarint(nil, uint64(n)+1)
		out = append(out, s.body[r.off:]...)
		out = append(out, 0x60, 1, 0x7f, 1, 0x7f) // (i32) -> i32
		return out, true, nil
	case secImport:
		n, err := r.count()
		if err != nil {
			return nil, false, err
		}
		out := binary.AppendUvarint(nil, uint64(n)+1)
		out = append(out, s.body[r.off:]...)
		out = appendName(out, m.cfg.Module)
		out = appendName(out, m.cfg.Name)
		out = append(out, byte(KindFunc))
		out = binary.AppendUvarint(out, uint64(tickType))
		return out, true, nil
	case secGlobal:
		out, err := m.globalSection(&r)
		return out, true, err
	case secExport:
		out, err := m.exportSection(&r)
		return out, true, err
	case secStart:
		idx, err := r.u32()
		if err != nil {
			return nil, false, err
		}
		return binary.AppendUvarint(nil, uint64(m.fn(idx))), true, r.done("start")
	case secElement:
		out, err := m.elementSection(&r)
		return out, true, err
	case secCode:
		out, err := m.codeSection(&r)
		return out, true, err
	}
	return s.body, true, nil
}

func (m *metering) globalSection(r *reader) ([]byte, error) {
	n, err := r.count()
	if err != nil {
		return nil, err
	}
	out := binary.AppendUvarint(nil, uint64(n)+2)
	for range n {
		start := r.off
		if err := r.skipValType(); err != nil {
			return nil, err
		}
		if _, err := r.byte(); err != nil { // mutability
			return nil, err
		}
		out = append(out, r.b[start:r.off]...)
		if out, err = m.constExpr(r, out); err != nil {
			return nil, err
		}
	}
	if err := r.done("global"); err != nil {
		return nil, err
	}
	for _, v := range []int32{m.cfg.Fuel, m.cfg.Stack} {
		out = append(out, 0x7f, 0x01, 0x41) // mut i32, i32.const
		out = appendSLEB(out, int64(v))
		out = append(out, 0x0b)
	}
	return out, nil
}

// constExpr copies a constant expression, renumbering ref.func.
func (m *metering) constExpr(r *reader, out []byte) ([]byte, error) {
	for {
		start := r.off
		op, err := r.byte()
		if err != nil {
			return nil, err
		}
		switch op {
		case 0x0b: // end
			return append(out, op), nil
		case 0xd2: // ref.func
			idx, err := r.u32()
			if err != nil {
				return nil, err
			}
			out = binary.AppendUvarint(append(out, op), uint64(m.fn(idx)))
			continue
		case 0x41:
			err = r.skipSLEB(32)
		case 0x42:
			err = r.skipSLEB(64)
		case 0x43:
			_, err = r.bytes(4)
		case 0x44:
			_, err = r.bytes(8)
		case 0x23: // global.get
			_, err = r.u32()
		case 0xd0: // ref.null
			err = r.skipRefType()
		case 0xfd: // v128.const
			var sub uint32
			if sub, err = r.u32(); err == nil && sub != 12 {
				err = fmt.Errorf("%w: SIMD opcode %d in a constant expression", ErrUnsupported, sub)
			}
			if err == nil {
				_, err = r.bytes(16)
			}
		default:
			err = fmt.Errorf("%w: opcode %#x in a constant expression", ErrUnsupported, op)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r.b[start:r.off]...)
	}
}

func (m *metering) exportSection(r *reader) ([]byte, error) {
	n, err := r.count()
	if err != nil {
		return nil, err
	}
	out := binary.AppendUvarint(nil, uint64(n))
	for range n {
		name, err := r.name()
		if err != nil {
			return nil, err
		}
		kind, err := r.byte()
		if err != nil {
			return nil, err
		}
		idx, err := r.u32()
		if err != nil {
			return nil, err
		}
		if Kind(kind) == KindFunc {
			idx = m.fn(idx)
		}
		out = append(appendName(out, name), kind)
		out = binary.AppendUvarint(out, uint64(idx))
	}
	return out, r.done("export")
}

func (m *metering) elementSection(r *reader) ([]byte, error) {
	n, err := r.count()
	if err != nil {
		return nil, err
	}
	out := binary.AppendUvarint(nil, uint64(n))
	for range n {
		flags, err := r.u32()
		if err != nil {
			return nil, err
		}
		if flags > 7 {
			return nil, fmt.Errorf("%w: element segment flags %d", ErrUnsupported, flags)
		}
		out = binary.AppendUvarint(out, uint64(flags))
		active, explicitTable, exprs := flags&1 == 0, flags&2 != 0, flags&4 != 0
		if active && explicitTable {
			idx, err := r.u32()
			if err != nil {
				return nil, err
			}
			out = binary.AppendUvarint(out, uint64(idx))
		}
		if active {
			if out, err = m.constExpr(r, out); err != nil {
				return nil, err
			}
		}
		if !active || explicitTable { // elemkind or reftype
			start := r.off
			if exprs {
				err = r.skipRefType()
			} else if k, _ := r.byte(); k != 0x00 {
				err = fmt.Errorf("%w: element kind %#x", ErrMalformed, k)
			}
			if err != nil {
				return nil, err
			}
			out = append(out, r.b[start:r.off]...)
		}
		count, err := r.count()
		if err != nil {
			return nil, err
		}
		out = binary.AppendUvarint(out, uint64(count))
		for range count {
			if exprs {
				out, err = m.constExpr(r, out)
			} else {
				var idx uint32
				if idx, err = r.u32(); err == nil {
					out = binary.AppendUvarint(out, uint64(m.fn(idx)))
				}
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return out, r.done("element")
}

// names renumbers the name section's function and local names, keeps the
// subsections not indexed by function, and drops label names. ok is false if
// the section does not parse.
func (m *metering) names(sec []byte) (out []byte, ok bool) {
	r := reader{b: sec}
	for r.off < len(sec) {
		id, err := r.byte()
		if err != nil {
			return nil, false
		}
		size, err := r.u32()
		if err != nil {
			return nil, false
		}
		body, err := r.bytes(int(size))
		if err != nil {
			return nil, false
		}
		switch id {
		case 1, 2: // function names, local names
			if body, err = m.renumberNameMap(body, id == 2); err != nil {
				return nil, false
			}
		case 3: // label names: the inserted blocks shift them
			continue
		}
		out = append(out, id)
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	return out, true
}

// renumberNameMap renumbers the function indices of a name map (or, if
// indirect, of an indirect name map).
func (m *metering) renumberNameMap(b []byte, indirect bool) ([]byte, error) {
	r := reader{b: b}
	n, err := r.count()
	if err != nil {
		return nil, err
	}
	out := binary.AppendUvarint(nil, uint64(n))
	for range n {
		idx, err := r.u32()
		if err != nil {
			return nil, err
		}
		out = binary.AppendUvarint(out, uint64(m.fn(idx)))
		start := r.off
		if indirect {
			k, err := r.count()
			if err != nil {
				return nil, err
			}
			for range k {
				if _, err := r.u32(); err != nil {
					return nil, err
				}
				if _, err := r.name(); err != nil {
					return nil, err
				}
			}
		} else if _, err := r.name(); err != nil {
			return nil, err
		}
		out = append(out, b[start:r.off]...)
	}
	return out, r.done("name")
}

func (m *metering) codeSection(r *reader) ([]byte, error) {
	n, err := r.count()
	if err != nil {
		return nil, err
	}
	out := binary.AppendUvarint(nil, uint64(n))
	var body []byte
	for i := range n {
		size, _ := r.u32() // checked by frameSizes
		code, _ := r.bytes(int(size))
		if body, err = m.function(code, body[:0]); err != nil {
			return nil, fmt.Errorf("function %d: %w", m.importedFuncs+i, err)
		}
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	return out, nil
}

// Byte offsets of the cost immediate in the fuel check, which is written as
// a fixed-width 5-byte LEB128 and patched once the cost is known.
const costWidth = 5

// fuelCheck appends the fuel check with a zero cost and returns the offset
// of its cost immediate:
//
//	global.get $fuel  i32.const cost  i32.sub  global.set $fuel
//	global.get $fuel  i32.const 0  i32.le_s
//	if  i32.const TickFuel  call $tick  global.set $fuel  end
func (m *metering) fuelCheck(out []byte) ([]byte, int) {
	out = binary.AppendUvarint(append(out, 0x23), uint64(m.fuel))
	out = append(out, 0x41)
	at := len(out)
	out = append(out, 0x80, 0x80, 0x80, 0x80, 0x00)
	out = binary.AppendUvarint(append(out, 0x6b, 0x24), uint64(m.fuel))
	out = binary.AppendUvarint(append(out, 0x23), uint64(m.fuel))
	out = append(out, 0x41, 0x00, 0x4c, 0x04, 0x40, 0x41, byte(TickFuel), 0x10)
	out = binary.AppendUvarint(out, uint64(m.tick))
	out = binary.AppendUvarint(append(out, 0x24), uint64(m.fuel))
	return append(out, 0x0b), at
}

// patchCost writes cost into the fixed-width immediate at b[at:].
func patchCost(b []byte, at int, cost uint64) {
	c := min(cost, maxCost)
	for i := range costWidth - 1 {
		b[at+i] = byte(c>>(7*i))&0x7f | 0x80
	}
	b[at+costWidth-1] = byte(c >> (7 * (costWidth - 1)))
}

// stackCharge appends the charge of frame bytes before a call:
//
//	global.get $stack  i32.const frame  i32.sub  global.set $stack
//	global.get $stack  i32.const 0  i32.lt_s
//	if  i32.const TickStack  call $tick  drop  end
func (m *metering) stackCharge(out []byte, frame int32) []byte {
	out = binary.AppendUvarint(append(out, 0x23), uint64(m.stack))
	out = appendSLEB(append(out, 0x41), int64(frame))
	out = binary.AppendUvarint(append(out, 0x6b, 0x24), uint64(m.stack))
	out = binary.AppendUvarint(append(out, 0x23), uint64(m.stack))
	out = append(out, 0x41, 0x00, 0x48, 0x04, 0x40, 0x41, byte(TickStack), 0x10)
	out = binary.AppendUvarint(out, uint64(m.tick))
	return append(out, 0x1a, 0x0b)
}

// stackRefund appends the refund of frame bytes after a call.
func (m *metering) stackRefund(out []byte, frame int32) []byte {
	out = binary.AppendUvarint(append(out, 0x23), uint64(m.stack))
	out = appendSLEB(append(out, 0x41), int64(frame))
	return binary.AppendUvarint(append(out, 0x6a, 0x24), uint64(m.stack))
}

// function rewrites one function body (locals and code) into out.
func (m *metering) function(code []byte, out []byte) ([]byte, error) {
	r := reader{b: code}
	if _, err := r.locals(); err != nil {
		return nil, err
	}
	out = append(out, code[:r.off]...)
	// counters holds the fuel checks still open, the function's and one per
	// enclosing loop; each instruction counts towards the innermost.
	type frame struct{ loop bool }
	type counter struct {
		at    int
		count uint64
	}
	var counters []counter // the function's, then one per open loop
	out, at := m.fuelCheck(out)
	counters = append(counters, counter{at: at})
	frames := []frame{{}}
	copied := r.off
	flush := func(upTo int) {
		out = append(out, code[copied:upTo]...)
		copied = upTo
	}
	for r.off < len(code) {
		if len(frames) == 0 {
			return nil, fmt.Errorf("%w: code after the function's end", ErrMalformed)
		}
		counters[len(counters)-1].count++
		start := r.off
		op, _ := r.byte()
		var err error
		switch op {
		case 0x02, 0x04: // block, if
			err = r.skipBlockType()
			frames = append(frames, frame{})
		case 0x03: // loop
			if err = r.skipBlockType(); err != nil {
				break
			}
			flush(r.off)
			out, at = m.fuelCheck(out)
			counters = append(counters, counter{at: at})
			frames = append(frames, frame{loop: true})
		case 0x0b: // end
			f := frames[len(frames)-1]
			frames = frames[:len(frames)-1]
			if f.loop || len(frames) == 0 {
				c := counters[len(counters)-1]
				counters = counters[:len(counters)-1]
				patchCost(out, c.at, c.count)
			}
		case 0x10: // call
			var idx uint32
			if idx, err = r.u32(); err != nil {
				break
			}
			flush(start)
			copied = r.off
			var cost int32
			if idx >= m.importedFuncs {
				if i := idx - m.importedFuncs; int(i) < len(m.frames) {
					cost = m.frames[i]
				}
			}
			if cost > 0 {
				out = m.stackCharge(out, cost)
			}
			out = binary.AppendUvarint(append(out, 0x10), uint64(m.fn(idx)))
			if cost > 0 {
				out = m.stackRefund(out, cost)
			}
		case 0x11: // call_indirect
			var typ uint32
			if typ, err = r.u32(); err != nil {
				break
			}
			if _, err = r.u32(); err != nil { // table
				break
			}
			if int(typ) >= len(m.types) {
				err = fmt.Errorf("%w: call_indirect type %d out of range", ErrMalformed, typ)
				break
			}
			cost := m.typeFrames[m.types[typ].key()]
			if cost > 0 {
				flush(start)
				out = m.stackCharge(out, cost)
				flush(r.off)
				out = m.stackRefund(out, cost)
			}
		case 0xd2: // ref.func
			var idx uint32
			if idx, err = r.u32(); err != nil {
				break
			}
			flush(start)
			copied = r.off
			out = binary.AppendUvarint(append(out, 0xd2), uint64(m.fn(idx)))
		default:
			err = r.skipInstr(op)
		}
		if err != nil {
			return nil, fmt.Errorf("at offset %d: %w", start, err)
		}
	}
	if len(frames) != 0 {
		return nil, fmt.Errorf("%w: function body has no end", ErrMalformed)
	}
	flush(len(code))
	return out, nil
}

// appendSLEB appends v as a signed LEB128.
func appendSLEB(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
