// Package wasmbin reads and rewrites WebAssembly core module binaries: it
// lists a module's imports and exports, moves an import to another namespace
// (Rename, which copies every other byte unchanged), and instruments a
// module's code so that the host regains control at bounded intervals and
// bounds its call stack (Meter, which decodes every instruction of
// WebAssembly 2.0 and refuses anything else).
package wasmbin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Kind is the kind of an imported item.
type Kind byte

// The import kinds of the core specification (and of the exception-handling
// proposal, for tags).
const (
	KindFunc   Kind = 0x00
	KindTable  Kind = 0x01
	KindMemory Kind = 0x02
	KindGlobal Kind = 0x03
	KindTag    Kind = 0x04
)

func (k Kind) String() string {
	switch k {
	case KindFunc:
		return "func"
	case KindTable:
		return "table"
	case KindMemory:
		return "memory"
	case KindGlobal:
		return "global"
	case KindTag:
		return "tag"
	}
	return fmt.Sprintf("kind(%#x)", byte(k))
}

// Import is one entry of a module's import section.
type Import struct {
	Module string
	Name   string
	Kind   Kind
	// desc is the raw import descriptor after the kind byte.
	desc []byte
}

// String renders the import the way error messages name it: module.name.
func (i Import) String() string { return i.Module + "." + i.Name }

var (
	magic   = []byte{0x00, 'a', 's', 'm'}
	version = []byte{0x01, 0x00, 0x00, 0x00}
)

const (
	importSectionID = 2
	exportSectionID = 7
)

// ErrMalformed is wrapped by every error about a binary that does not parse.
var ErrMalformed = errors.New("malformed wasm binary")

// Imports lists the imports of the module, in order.
func Imports(wasm []byte) ([]Import, error) {
	sec, _, _, err := findSection(wasm, importSectionID)
	if err != nil || sec == nil {
		return nil, err
	}
	return parseImports(sec)
}

// Rename returns a copy of wasm in which every import for which rename
// returns a non-empty module name is moved to that module. The import's name,
// kind and type are unchanged, and so is every other section. When nothing is
// renamed, Rename returns wasm itself.
func Rename(wasm []byte, rename func(Import) string) ([]byte, error) {
	sec, start, end, err := findSection(wasm, importSectionID)
	if err != nil || sec == nil {
		return wasm, err
	}
	imports, err := parseImports(sec)
	if err != nil {
		return nil, err
	}
	changed := false
	for i := range imports {
		if m := rename(imports[i]); m != "" && m != imports[i].Module {
			imports[i].Module = m
			changed = true
		}
	}
	if !changed {
		return wasm, nil
	}
	var body []byte
	body = binary.AppendUvarint(body, uint64(len(imports)))
	for _, imp := range imports {
		body = appendName(body, imp.Module)
		body = appendName(body, imp.Name)
		body = append(body, byte(imp.Kind))
		body = append(body, imp.desc...)
	}
	out := make([]byte, 0, len(wasm)+len(body)-len(sec)+8)
	out = append(out, wasm[:start]...)
	out = append(out, importSectionID)
	out = binary.AppendUvarint(out, uint64(len(body)))
	out = append(out, body...)
	out = append(out, wasm[end:]...)
	return out, nil
}

// CodeSectionID is the id of the code section, which holds the function
// bodies.
const CodeSectionID = 10

// SectionSize returns the size of the contents of the first section with
// the given id, or 0 if the module has none.
func SectionSize(wasm []byte, id byte) (int, error) {
	sec, _, _, err := findSection(wasm, id)
	return len(sec), err
}

// Export is one entry of a module's export section.
type Export struct {
	Name  string
	Kind  Kind
	Index uint32
}

// Exports lists the exports of the module, in order.
func Exports(wasm []byte) ([]Export, error) {
	sec, _, _, err := findSection(wasm, exportSectionID)
	if err != nil || sec == nil {
		return nil, err
	}
	r := reader{b: sec}
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if uint64(n) > uint64(len(sec)) {
		return nil, fmt.Errorf("%w: export count %d exceeds section size", ErrMalformed, n)
	}
	exports := make([]Export, 0, n)
	for range n {
		var e Export
		if e.Name, err = r.name(); err != nil {
			return nil, err
		}
		kind, err := r.byte()
		if err != nil {
			return nil, err
		}
		e.Kind = Kind(kind)
		if e.Index, err = r.u32(); err != nil {
			return nil, err
		}
		exports = append(exports, e)
	}
	if r.off != len(sec) {
		return nil, fmt.Errorf("%w: %d trailing bytes in export section", ErrMalformed, len(sec)-r.off)
	}
	return exports, nil
}

// findSection returns the contents of the first section with the given id
// and the offsets of the whole section (id byte through the end of its
// contents), or nil if the module has none. It checks the framing of every
// section.
func findSection(wasm []byte, want byte) (found []byte, start, end int, err error) {
	if len(wasm) < 8 || !bytes.Equal(wasm[:4], magic) {
		return nil, 0, 0, fmt.Errorf("%w: no \\0asm magic", ErrMalformed)
	}
	if !bytes.Equal(wasm[4:8], version) {
		return nil, 0, 0, fmt.Errorf("%w: version % x is not a core module (components are not supported)", ErrMalformed, wasm[4:8])
	}
	r := reader{b: wasm, off: 8}
	for r.off < len(r.b) {
		secStart := r.off
		id, err := r.byte()
		if err != nil {
			return nil, 0, 0, err
		}
		size, err := r.u32()
		if err != nil {
			return nil, 0, 0, err
		}
		contents, err := r.bytes(int(size))
		if err != nil {
			return nil, 0, 0, fmt.Errorf("%w: section %d runs past the end", ErrMalformed, id)
		}
		if id == want && found == nil {
			found, start, end = contents, secStart, r.off
		}
	}
	return found, start, end, nil
}

func parseImports(sec []byte) ([]Import, error) {
	r := reader{b: sec}
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if uint64(n) > uint64(len(sec)) { // each import takes at least 3 bytes
		return nil, fmt.Errorf("%w: import count %d exceeds section size", ErrMalformed, n)
	}
	imports := make([]Import, 0, n)
	for range n {
		var imp Import
		if imp.Module, err = r.name(); err != nil {
			return nil, err
		}
		if imp.Name, err = r.name(); err != nil {
			return nil, err
		}
		kind, err := r.byte()
		if err != nil {
			return nil, err
		}
		imp.Kind = Kind(kind)
		descStart := r.off
		if err := r.skipDesc(imp.Kind); err != nil {
			return nil, fmt.Errorf("import %s: %w", imp, err)
		}
		imp.desc = sec[descStart:r.off]
		imports = append(imports, imp)
	}
	if r.off != len(sec) {
		return nil, fmt.Errorf("%w: %d trailing bytes in import section", ErrMalformed, len(sec)-r.off)
	}
	return imports, nil
}

func appendName(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader is a cursor over a byte slice that fails with ErrMalformed instead
// of panicking.
type reader struct {
	b   []byte
	off int
}

func (r *reader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, fmt.Errorf("%w: unexpected end", ErrMalformed)
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *reader) bytes(n int) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, fmt.Errorf("%w: unexpected end", ErrMalformed)
	}
	b := r.b[r.off : r.off+n]
	r.off += n
	return b, nil
}

// uleb reads an unsigned LEB128 of at most bits bits.
func (r *reader) uleb(bits uint) (uint64, error) {
	var v uint64
	for shift := uint(0); ; shift += 7 {
		if shift >= bits+7 || shift >= 64 {
			return 0, fmt.Errorf("%w: LEB128 too long", ErrMalformed)
		}
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if bits < 64 && v>>bits != 0 {
				return 0, fmt.Errorf("%w: LEB128 overflows %d bits", ErrMalformed, bits)
			}
			return v, nil
		}
	}
}

func (r *reader) u32() (uint32, error) {
	v, err := r.uleb(32)
	return uint32(v), err
}

func (r *reader) name() (string, error) {
	n, err := r.u32()
	if err != nil {
		return "", err
	}
	b, err := r.bytes(int(n))
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: name is not UTF-8", ErrMalformed)
	}
	return string(b), nil
}

func (r *reader) skipDesc(k Kind) error {
	switch k {
	case KindFunc:
		_, err := r.u32()
		return err
	case KindTable:
		if err := r.skipRefType(); err != nil {
			return err
		}
		return r.skipLimits()
	case KindMemory:
		return r.skipLimits()
	case KindGlobal:
		if err := r.skipValType(); err != nil {
			return err
		}
		_, err := r.byte() // mutability
		return err
	case KindTag:
		if _, err := r.byte(); err != nil { // attribute
			return err
		}
		_, err := r.u32()
		return err
	}
	return fmt.Errorf("%w: unknown import kind %#x", ErrMalformed, byte(k))
}

func (r *reader) skipLimits() error {
	flags, err := r.byte()
	if err != nil {
		return err
	}
	if flags > 0x07 {
		return fmt.Errorf("%w: unknown limits flags %#x", ErrMalformed, flags)
	}
	bits := uint(32)
	if flags&0x04 != 0 { // memory64
		bits = 64
	}
	if _, err := r.uleb(bits); err != nil {
		return err
	}
	if flags&0x01 != 0 {
		_, err = r.uleb(bits)
	}
	return err
}

// skipValType skips a value type, including the (ref null? ht) forms of the
// typed function references proposal.
func (r *reader) skipValType() error {
	c, err := r.byte()
	if err != nil {
		return err
	}
	if c == 0x63 || c == 0x64 { // ref null ht / ref ht
		_, err = r.uleb(33) // heap type: s33
	}
	return err
}

func (r *reader) skipRefType() error { return r.skipValType() }
