package secretscan

import (
	"bytes"
	"context"
	"testing"
)

// FuzzRedact embeds a secret in text, through a random stack of up to
// MaxDepth encodings, each written in a random style with random text
// around it, and checks that Contains finds it, that one pass of Redact
// leaves nothing Contains finds, and that undoing the stack on the
// redacted bytes with the reference decoders does not give it back.
//
//	go test -run '^$' -fuzz FuzzRedact -fuzztime 3m ./runtime/secretscan
func FuzzRedact(f *testing.F) {
	const secret = "sk-live/4f9+Ab=Zx_12"
	for i, e := range encoders {
		for style := range e.styles {
			f.Add([]byte(secret), []byte{0, byte(i), byte(style), 3, 3})
		}
	}
	// The review's three, and compositions of each layer with the others.
	f.Add([]byte(secret), []byte{0, 0, 1, 7, 2})
	f.Add([]byte(secret), []byte{0, 0, 2, 7, 2})
	f.Add([]byte(secret), []byte{0, 1, 0, 0, 0})
	for i := range encoders {
		for j := range encoders {
			f.Add([]byte(secret), []byte{1, byte(i), 1, 2, 5, byte(j), 2, 9, 4})
		}
	}
	f.Add([]byte(`p@ss/w"rd\+&%<>=;'x`), []byte{3, 4, 7, 1, 1, 1, 0, 2, 2, 0, 1, 0, 0, 3, 0, 5, 5})
	f.Fuzz(func(t *testing.T, raw, tape []byte) {
		secret := printable(raw)
		if len(secret) < MinLen {
			return
		}
		tp := &tapeReader{b: tape}
		layers := make([]layer, 1+tp.next()%MaxDepth)
		for i := range layers {
			e := encoders[tp.next()%len(encoders)]
			layers[i] = layer{enc: e, style: tp.next() % len(e.styles), pre: tp.text(), suf: tp.text()}
		}
		inner := tp.text() + string(secret) + tp.text()
		checkStack(t, secret, []byte(inner), layers)
	})
}

// checkStack checks that secret is found in inner encoded by layers, and
// is gone from what Redact returns.
func checkStack(t *testing.T, secret, inner []byte, layers []layer) {
	t.Helper()
	set := New([][]byte{secret})
	doc := build(inner, layers)
	if !set.Contains(doc) {
		t.Fatalf("not found in %q\nlayers %v", doc, layers)
	}
	once, changed := set.redactOnce(context.Background(), doc)
	if !changed || set.Contains(once) || bytes.Contains(once, secret) || !bytes.Contains(once, []byte(Redacted)) {
		t.Fatalf("one pass redacts %q to %q\nlayers %v", doc, once, layers)
	}
	if back, ok := unbuild(once, layers); ok && bytes.Contains(back, secret) {
		t.Fatalf("%q redacted to %q, which decodes to %q\nlayers %v", doc, once, back, layers)
	}
	if got := set.Redact(doc); !bytes.Equal(got, once) {
		t.Fatalf("Redact %q, one pass %q", got, once)
	}
}

// printable maps b onto a secret of at most 64 characters: printable
// ASCII mostly, a space or a non-ASCII character now and then, as a
// header value may hold.
func printable(b []byte) []byte {
	out := make([]byte, 0, min(len(b), 64))
	for _, c := range b[:min(len(b), 64)] {
		switch {
		case c >= 0xfc:
			out = append(out, []string{" ", "é", "€", "🔑"}[c-0xfc]...)
		default:
			out = append(out, '!'+c%('~'-'!'+1))
		}
	}
	return out
}

// tapeReader hands out the fuzzer's choices, zeros once it runs out.
type tapeReader struct {
	b []byte
	i int
}

func (t *tapeReader) next() int {
	if t.i >= len(t.b) {
		return 0
	}
	t.i++
	return int(t.b[t.i-1])
}

// contextChars is what text around an encoding is made of: anything but
// the bytes that start an escape (\ % & =), which a writer of that text
// would have escaped in its turn.
const contextChars = "abcXYZ019 -_.:/\"'{}[],;!?@#$*()~<>+\n"

// text returns up to 12 bytes of context.
func (t *tapeReader) text() string {
	n := t.next() % 13
	out := make([]byte, n)
	for i := range out {
		out[i] = contextChars[t.next()%len(contextChars)]
	}
	return string(out)
}
