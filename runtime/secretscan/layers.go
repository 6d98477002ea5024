package secretscan

import (
	"bytes"
	"html"
	"unicode/utf16"
	"unicode/utf8"
)

// A stream layer undoes escapes that each stand for a few bytes (or none,
// as a quoted-printable soft line break) and leaves every other byte as it
// is. Its runs are the stretches between two delimiters that hold at least
// one escape; a decoded byte maps back to the escape it came from.
type stream struct {
	name    string
	trigger byte       // every escape starts with it
	delim   *[256]bool // outside an escape, ends a run
	// lineDelim, if set, replaces delim on a line of at most maxLine bytes.
	lineDelim *[256]bool
	// step appends the escape at src[i] (src[i] == trigger) to dst and
	// returns its length in src, or 0 if src[i:] is not an escape.
	step func(dst, src []byte, i int) ([]byte, int)
}

// A block layer decodes a run of alphabet characters, bits bits each,
// across line breaks (LF or CRLF, and indentation after them), with or
// without trailing '=' padding. The bits a character carries land in
// different bytes depending on where the encoding started, so a run is
// decoded from each of its first group characters.
type block struct {
	name  string
	bits  int       // per character
	group int       // characters per whole number of bytes
	pad   bool      // '=' may follow a run
	val   [256]int8 // each character's value; -1 outside the alphabet
}

// The layers, in the order a scan tries them.
//
// A stream layer's delimiters split the work: a run from delimiter to
// delimiter is decoded once, and scanned again whole, so they must be
// bytes its encoders escape, and frequent enough to keep runs short. All
// of them end at control characters (which keeps runs short in decoded
// binary); JSON strings end at a quote; percent-encoded text at a space,
// quote, angle bracket or backslash (so that a run inside a JSON string
// does not swallow a \" escape); HTML text at a quote or angle bracket.
// Quoted-printable escapes only line breaks, so its runs are logical
// lines (soft line breaks are escapes) — on lines of at most maxLine
// bytes, as its lines are. On longer ones its runs end where
// percent-encoding's do: a run to the end of the line would be a whole
// minified JSON document, scanned again whenever "page=10" turns up in it.
var (
	streams = []*stream{
		{name: "json", trigger: '\\', delim: delims(`"`), step: jsonStep},
		{name: "percent", trigger: '%', delim: delims(` "<>\`), step: percentStep},
		{name: "html", trigger: '&', delim: delims(`"<>`), step: htmlStep},
		{name: "quoted-printable", trigger: '=', delim: delims(` "<>\`), lineDelim: lineDelims, step: qpStep},
	}
	blocks = []*block{
		newBlock("base64", 6, true, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", "-+", "_/"),
		newBlock("base32", 5, true, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
		newBlock("base32 lower case", 5, true, "abcdefghijklmnopqrstuvwxyz234567"),
		newBlock("hex", 4, false, "0123456789ABCDEF", "aA", "bB", "cC", "dD", "eE", "fF"),
	}
)

// delims returns the table of the control characters and the bytes in s.
func delims(s string) *[256]bool {
	var t [256]bool
	for c := range 0x20 {
		t[c] = true
	}
	t[0x7f] = true
	for i := range len(s) {
		t[s[i]] = true
	}
	return &t
}

// lineDelims ends a quoted-printable run on a short line: a control
// character but a tab.
var lineDelims = func() *[256]bool {
	t := delims("")
	t['\t'] = false
	return t
}()

// maxLine is the longest line SMTP allows (RFC 5321); quoted-printable
// lines are at most 76 bytes.
const maxLine = 998

// delimAt returns the delimiters of a run with b[i] in it. line caches the
// line last looked at, [start, end) without its '\n'; {0, -1} at first.
// Calls with increasing i cost O(len(b)) in all.
func (l *stream) delimAt(b []byte, i int, line *span) *[256]bool {
	if l.lineDelim == nil {
		return l.delim
	}
	if i > line.end {
		from := line.end + 1
		line.start = from + bytes.LastIndexByte(b[from:i], '\n') + 1
		if e := bytes.IndexByte(b[i:], '\n'); e >= 0 {
			line.end = i + e
		} else {
			line.end = len(b)
		}
	}
	if line.end-line.start <= maxLine {
		return l.lineDelim
	}
	return l.delim
}

// newBlock returns a block layer whose i-th alphabet character is worth i.
// Each alias is two characters, the first read as the second (the URL-safe
// base64 characters, lower case hex digits).
func newBlock(name string, bits int, pad bool, alphabet string, aliases ...string) *block {
	l := &block{name: name, bits: bits, group: lcm8(bits) / bits, pad: pad}
	for i := range l.val {
		l.val[i] = -1
	}
	for i := range len(alphabet) {
		l.val[alphabet[i]] = int8(i)
	}
	for _, a := range aliases {
		l.val[a[0]] = l.val[a[1]]
	}
	return l
}

// lcm8 is the least common multiple of bits and 8.
func lcm8(bits int) int {
	m := bits
	for m%8 != 0 {
		m += bits
	}
	return m
}

// decode appends the run starting at src[start] to dst, decoded, and
// returns it with the run's end (a byte of delim or len(src)) and the
// number of escapes undone.
func (l *stream) decode(dst, src []byte, start int, delim *[256]bool) ([]byte, int, int) {
	escapes := 0
	i := start
	for i < len(src) {
		c := src[i]
		if c == l.trigger {
			if out, n := l.step(dst, src, i); n > 0 {
				dst, i = out, i+n
				escapes++
				continue
			}
		} else if delim[c] {
			break
		}
		dst = append(dst, c)
		i++
	}
	return dst, i, escapes
}

// remap maps spans of run's decoding (sorted, disjoint) to the spans of
// run they were decoded from, whole escapes included.
func (l *stream) remap(run []byte, spans []span) []span {
	out := make([]span, 0, len(spans))
	var scratch [8]byte
	k, open, start := 0, false, 0
	for i, o := 0, 0; i < len(run) && k < len(spans); {
		n, m := 1, 1 // the unit run[i:i+n] decodes to m bytes
		if run[i] == l.trigger {
			if d, nn := l.step(scratch[:0], run, i); nn > 0 {
				n, m = nn, len(d)
			}
		}
		for k < len(spans) && m > 0 {
			if !open {
				if o+m <= spans[k].start {
					break
				}
				start, open = i, true
			}
			if o+m < spans[k].end {
				break
			}
			out = append(out, span{start, i + n})
			open = false
			k++
		}
		i, o = i+n, o+m
	}
	if open {
		out = append(out, span{start, len(run)})
	}
	return out
}

// runs calls yield with each run of b, as [start, end) with its trailing
// padding, and the number of alphabet characters in it, if there are at
// least min of them, until yield returns false.
func (l *block) runs(b []byte, min int, yield func(start, end, chars int) bool) {
	val := &l.val
	for i := 0; i < len(b); {
		for i < len(b) && val[b[i]] < 0 {
			i++
		}
		start, chars := i, 0
		for {
			j := i
			for j < len(b) && val[b[j]] >= 0 {
				j++
			}
			chars += j - i
			i = j
			// Whitespace with a line break in it continues the run.
			nl := false
			for j < len(b) && (b[j] == ' ' || b[j] == '\t' || b[j] == '\r' || b[j] == '\n') {
				nl = nl || b[j] == '\r' || b[j] == '\n'
				j++
			}
			if !nl || j == len(b) || val[b[j]] < 0 {
				break
			}
			i = j
		}
		end := i
		for l.pad && end < len(b) && b[end] == '=' {
			end++
		}
		if chars >= min && chars > 0 && !yield(start, end, chars) {
			return
		}
		i = end
	}
}

// decode appends to dst the bytes that run encodes from its skip-th
// alphabet character on; a partial byte at the end is dropped.
func (l *block) decode(dst, run []byte, skip int) []byte {
	var acc uint32
	n := 0
	for _, c := range run {
		v := l.val[c]
		if v < 0 {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		acc = acc<<l.bits | uint32(v)
		n += l.bits
		if n >= 8 {
			n -= 8
			dst = append(dst, byte(acc>>n))
		}
	}
	return dst
}

// jsonStep undoes a JSON string escape, and the JavaScript ones a server
// might use in its place: \' \xHH \u{H...}. \uXXXX escapes may be in
// either case; a surrogate pair makes one character, a lone surrogate
// U+FFFD, as in encoding/json.
func jsonStep(dst, src []byte, i int) ([]byte, int) {
	if i+1 >= len(src) {
		return dst, 0
	}
	switch c := src[i+1]; c {
	case '"', '\\', '/', '\'':
		return append(dst, c), 2
	case 'b':
		return append(dst, '\b'), 2
	case 'f':
		return append(dst, '\f'), 2
	case 'n':
		return append(dst, '\n'), 2
	case 'r':
		return append(dst, '\r'), 2
	case 't':
		return append(dst, '\t'), 2
	case 'x':
		if v, ok := hexByte(src, i+2); ok {
			return append(dst, v), 4
		}
	case 'u':
		if i+2 < len(src) && src[i+2] == '{' {
			r, j := 0, i+3
			for j < len(src) && j < i+9 && unhex[src[j]] >= 0 {
				r = r<<4 | int(unhex[src[j]])
				j++
			}
			if j > i+3 && j < len(src) && src[j] == '}' {
				return appendRune(dst, rune(r)), j + 1 - i
			}
			return dst, 0
		}
		return appendUTF16(dst, src, i, 2)
	}
	return dst, 0
}

// percentStep undoes %XX (either case) and the %uXXXX of JavaScript's
// escape().
func percentStep(dst, src []byte, i int) ([]byte, int) {
	if v, ok := hexByte(src, i+1); ok {
		return append(dst, v), 3
	}
	if i+1 < len(src) && (src[i+1] == 'u' || src[i+1] == 'U') {
		return appendUTF16(dst, src, i, 2)
	}
	return dst, 0
}

// appendUTF16 undoes the escape at src[i], whose 4 hex digits start at
// src[i+prefix], joining a surrogate pair written as two such escapes
// (same prefix). It returns the escape's length, 0 if there is none.
func appendUTF16(dst, src []byte, i, prefix int) ([]byte, int) {
	r, ok := hex4(src, i+prefix)
	if !ok {
		return dst, 0
	}
	n := prefix + 4
	if utf16.IsSurrogate(r) {
		j := i + n
		if r < 0xdc00 && j+n <= len(src) && src[j] == src[i] && src[j+1]|0x20 == src[i+1]|0x20 {
			if r2, ok := hex4(src, j+prefix); ok {
				if c := utf16.DecodeRune(r, r2); c != utf8.RuneError {
					return utf8.AppendRune(dst, c), 2 * n
				}
			}
		}
		r = utf8.RuneError
	}
	return utf8.AppendRune(dst, r), n
}

// maxEntity is longer than the longest HTML entity name.
const maxEntity = 40

// htmlStep undoes an HTML character reference: &#DDD; &#xHHH; (the ';'
// optional, as browsers read them) or a named one (&amp;, and the legacy
// ones that may lack the ';'), as html.UnescapeString does.
func htmlStep(dst, src []byte, i int) ([]byte, int) {
	j := i + 1
	if j < len(src) && src[j] == '#' {
		j++
		base := 10
		if j < len(src) && src[j]|0x20 == 'x' {
			base, j = 16, j+1
		}
		digits := j
		for j < len(src) && (unhex[src[j]] >= 0 && (base == 16 || src[j] <= '9')) {
			j++
		}
		if j == digits {
			return dst, 0
		}
	} else {
		for j < len(src) && j-i < maxEntity && isAlnum(src[j]) {
			j++
		}
		if j == i+1 {
			return dst, 0
		}
	}
	if j < len(src) && src[j] == ';' {
		j++
	}
	ref := string(src[i:j])
	u := html.UnescapeString(ref)
	if u == ref {
		return dst, 0
	}
	return append(dst, u...), j - i
}

// qpStep undoes a quoted-printable =XX (either case) and soft line break
// ('=' at the end of a line, trailing blanks allowed).
func qpStep(dst, src []byte, i int) ([]byte, int) {
	if v, ok := hexByte(src, i+1); ok {
		return append(dst, v), 3
	}
	j := i + 1
	for j < len(src) && (src[j] == ' ' || src[j] == '\t') {
		j++
	}
	switch {
	case j < len(src) && src[j] == '\n':
		return dst, j + 1 - i
	case j+1 < len(src) && src[j] == '\r' && src[j+1] == '\n':
		return dst, j + 2 - i
	}
	return dst, 0
}

var unhex [256]int8

func init() {
	for i := range unhex {
		unhex[i] = -1
	}
	for i, c := range []byte("0123456789abcdef") {
		unhex[c] = int8(i)
		if c >= 'a' {
			unhex[c-'a'+'A'] = int8(i)
		}
	}
}

// hexByte reads the two hex digits at src[i].
func hexByte(src []byte, i int) (byte, bool) {
	if i+1 >= len(src) || unhex[src[i]] < 0 || unhex[src[i+1]] < 0 {
		return 0, false
	}
	return byte(unhex[src[i]])<<4 | byte(unhex[src[i+1]]), true
}

// hex4 reads the four hex digits at src[i].
func hex4(src []byte, i int) (rune, bool) {
	if i+3 >= len(src) {
		return 0, false
	}
	var r rune
	for _, c := range src[i : i+4] {
		if unhex[c] < 0 {
			return 0, false
		}
		r = r<<4 | rune(unhex[c])
	}
	return r, true
}

// appendRune appends r, or U+FFFD if it is not a valid character.
func appendRune(dst []byte, r rune) []byte {
	if !utf8.ValidRune(r) {
		r = utf8.RuneError
	}
	return utf8.AppendRune(dst, r)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
