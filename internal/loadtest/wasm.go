package loadtest

import "encoding/binary"

// WithCustomSection returns a copy of module with a custom section (id 0)
// named name holding payload appended. A custom section may follow any
// section and changes nothing the module does, so this makes any number of
// distinct modules, each with its own digest and compiled code, out of one.
func WithCustomSection(module []byte, name string, payload []byte) []byte {
	body := binary.AppendUvarint(nil, uint64(len(name)))
	body = append(body, name...)
	body = append(body, payload...)
	out := append([]byte(nil), module...)
	out = append(out, 0)
	out = binary.AppendUvarint(out, uint64(len(body)))
	return append(out, body...)
}
