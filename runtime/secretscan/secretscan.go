// Package secretscan finds secret values in bytes, in the spellings servers
// and modules really produce. The egress client uses it to block a request
// that would carry a released secret; the sandbox, to redact a response
// before the module reads it; the runner, to redact what goes back to the
// caller.
//
// A scan looks for each secret in the bytes as they are, then undoes every
// encoding it knows wherever a run of the bytes could be one, and looks
// again in what that gives, recursively, up to MaxDepth layers deep:
//
//   - JSON string escapes: \/ \" \\ \n and the others, \uXXXX in any case
//     (surrogate pairs too), and JavaScript's \xHH, \u{H...} and \';
//   - percent-encoding: %XX in any case, of any character, and %uXXXX;
//   - HTML character references: &#DDD; and &#xHH; (';' optional) and
//     named ones (&amp;, and the legacy ones without ';');
//   - quoted-printable: =XX in any case, soft line breaks;
//   - base64, standard and URL-safe alphabets (mixed too), with any
//     padding or none, wrapped with LF or CRLF at any width (and indented);
//   - base32, upper or lower case, any padding, wrapped;
//   - hex, any mix of cases, wrapped.
//
// Layers compose in any order and any repetition (base64 of a
// percent-encoded JSON string is three). The secret may sit anywhere in
// the decoded text, with anything around it (base64 of "Bearer "+key+"\n").
// A base64, base32 or hex run is decoded from each of its first 4, 8 or 2
// characters, so an encoding that starts inside a longer run of the same
// alphabet (a path, a word, "token" glued to it) is decoded too.
//
// Redact replaces what it finds with Redacted, in the original bytes: for
// an escape layer, exactly the escapes and characters that spell the
// secret, so that the rest still decodes (a JSON string stays a valid JSON
// string); for base64, base32 and hex, the whole run and its padding.
// Bytes where nothing was found are returned as they are.
//
// The cost is bounded: a scan of n bytes decodes at most BudgetFactor*n +
// BudgetBase bytes over all layers, and fails closed past that: a run it
// cannot afford to decode counts as a find, so Contains reports true and
// Redact replaces the run.
//
// What a scan cannot see:
//
//   - a secret shorter than MinLen bytes inside base64, base32 or hex,
//     unless the run (trimmed of whitespace) encodes exactly that secret:
//     a short string turns up by chance in decoded noise;
//   - more than MaxDepth layers;
//   - anything but these encodings: encryption, compression (the egress
//     client undoes a response's Content-Encoding; gzip inside a JSON
//     field is opaque), hashing, reversal, XOR, ROT13, a change of the
//     secret's own case, base32hex, base58, base85, uuencode, octal
//     escapes (\101), lists of character codes, Unicode normalization;
//   - a secret split across requests, headers or fields, or interleaved
//     with other text;
//   - base64, base32 or hex runs broken by anything but line breaks and
//     the indentation after them ("de:ad:be:ef", "dead beef"), or base32
//     mixing cases within a run;
//   - escapes mixed with characters that end the layer's runs, left raw
//     in the secret's spelling: for JSON, a quote or a control character;
//     for percent-encoding, those and a space, '<', '>' or '\' (encoders
//     escape all of them); for HTML, a quote, '<', '>' or a control
//     character; for quoted-printable, a control character on lines of up
//     to 998 bytes (SMTP's limit; its own lines are 76), the percent
//     ones on longer lines, which are no e-mail's;
//   - '+' for a space (form encoding) only if every space of the secret
//     is spelled so.
package secretscan

import (
	"bytes"
	"cmp"
	"context"
	"slices"
)

// checkEvery is how many decoded bytes a scan goes between two looks at
// its context: a few tens of microseconds of work.
const checkEvery = 64 << 10

// Redacted replaces a secret found by Redact.
const Redacted = "[REDACTED]"

// MaxDepth is how many layers of encoding a scan undoes, one inside the
// other. Three cover what servers do on their own: an encoding of the
// credential (base64 for Basic auth, hex), a place for it (a URL's
// percent-encoding, a quoted-printable mail body) and the response's
// syntax (a JSON string, an HTML attribute). The fourth is margin for
// one more, deliberate or not. Each layer multiplies what a crafted input
// can make a scan decode; the budget bounds that, not the depth.
const MaxDepth = 4

// MinLen is the shortest secret looked for anywhere inside base64, base32
// and hex: a decoded run of unrelated text is noise, in which a shorter one
// would turn up by chance.
const MinLen = 8

// BudgetFactor and BudgetBase bound a scan of n bytes to decoding at most
// BudgetFactor*n + BudgetBase bytes over all its layers. Realistic
// responses decode 1 to 10 bytes per input byte (the most for base64 file
// contents in a JSON API, scanned as base64 lines between "\n" escapes and
// again as one run); crafted ones, whose every decoding decodes again,
// would decode exponentially more without it.
const (
	BudgetFactor = 32
	BudgetBase   = 64 << 10
)

// Set is some secrets, longest first.
type Set struct {
	needles  [][]byte
	minLong  int // the shortest needle of MinLen bytes or more; 0 if none
	minShort int // the shortest needle shorter than MinLen; 0 if none
}

// New returns the Set of secrets; empty secrets are ignored. A secret with
// spaces is also looked for with '+' for each of them, as form encoding
// spells it.
func New(secrets [][]byte) *Set {
	s := &Set{}
	for _, secret := range secrets {
		if len(secret) == 0 {
			continue
		}
		s.needles = append(s.needles, bytes.Clone(secret))
		if bytes.IndexByte(secret, ' ') >= 0 {
			s.needles = append(s.needles, bytes.ReplaceAll(secret, []byte(" "), []byte("+")))
		}
	}
	slices.SortFunc(s.needles, func(a, b []byte) int {
		return cmp.Or(cmp.Compare(len(b), len(a)), bytes.Compare(a, b))
	})
	s.needles = slices.CompactFunc(s.needles, bytes.Equal)
	for _, n := range s.needles {
		if len(n) >= MinLen {
			s.minLong = len(n)
		} else if s.minShort == 0 || len(n) < s.minShort {
			s.minShort = len(n)
		}
	}
	return s
}

// Empty reports whether the set has no secret.
func (s *Set) Empty() bool { return len(s.needles) == 0 }

// Contains reports whether b holds any secret, in any spelling the scan
// sees, or a run too costly to scan.
func (s *Set) Contains(b []byte) bool {
	return s.ContainsContext(context.Background(), b)
}

// ContainsContext is Contains, bounded by ctx: once ctx ends, every run
// the scan has yet to decode counts as a find (fail closed), so a scan
// inside a call ends soon after the call's deadline.
func (s *Set) ContainsContext(ctx context.Context, b []byte) bool {
	if s.Empty() {
		return false
	}
	sc := s.scanner(ctx, b, true)
	return len(sc.find(b, 0, true)) > 0
}

// Redact returns b with every secret, in any spelling the scan sees,
// replaced by Redacted; b itself if there is none.
func (s *Set) Redact(b []byte) []byte {
	return s.RedactContext(context.Background(), b)
}

// RedactContext is Redact, bounded by ctx as ContainsContext is: once ctx
// ends, every run it has yet to decode is replaced.
func (s *Set) RedactContext(ctx context.Context, b []byte) []byte {
	if s.Empty() {
		return b
	}
	out, changed := s.redactOnce(ctx, b)
	if changed && s.ContainsContext(ctx, out) {
		// One pass replaces whatever a scan finds, and Redacted cannot
		// join what is around it into a new find; the tests and the
		// fuzzer have never seen this. If it happens, fail closed.
		return []byte(Redacted)
	}
	return out
}

// redactOnce replaces what one scan of b finds, reporting whether it found
// anything.
func (s *Set) redactOnce(ctx context.Context, b []byte) ([]byte, bool) {
	sc := s.scanner(ctx, b, false)
	spans := merge(sc.find(b, 0, true))
	if len(spans) == 0 {
		return b, false
	}
	out := make([]byte, 0, len(b))
	last := 0
	for _, sp := range spans {
		out = append(out, b[last:sp.start]...)
		out = append(out, Redacted...)
		last = sp.end
	}
	return append(out, b[last:]...), true
}

// span is [start, end) of some bytes.
type span struct{ start, end int }

// merge sorts spans and joins those that overlap or touch.
func merge(spans []span) []span {
	if len(spans) < 2 {
		return spans
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	out := spans[:1]
	for _, sp := range spans[1:] {
		if last := &out[len(out)-1]; sp.start <= last.end {
			last.end = max(last.end, sp.end)
		} else {
			out = append(out, sp)
		}
	}
	return out
}

// scanner is the state of one scan.
type scanner struct {
	set       *Set
	first     bool // stop at the first find
	budget    int  // bytes decoding may still produce
	spent     int  // bytes decoded
	exhausted bool // a run was too costly to decode
	// ctx bounds the scan; unchecked is what was decoded since the last
	// look at it.
	ctx       context.Context
	unchecked int
	// buf[d] holds the bytes being scanned d layers deep: a run is decoded,
	// scanned and done with before the next one at its depth.
	buf [MaxDepth + 1][]byte
}

func (s *Set) scanner(ctx context.Context, b []byte, first bool) *scanner {
	return &scanner{set: s, first: first, budget: BudgetFactor*len(b) + BudgetBase, ctx: ctx}
}

// done reports whether the scan may stop with what it found.
func (sc *scanner) done(found []span) bool { return sc.first && len(found) > 0 }

// find returns the spans of b, which is d layers deep, that hold a secret.
// b is text if only escape layers were undone to get it: short secrets are
// looked for only in text.
func (sc *scanner) find(b []byte, d int, text bool) []span {
	found := sc.search(b, text)
	if d == MaxDepth || sc.done(found) {
		return found
	}
	for _, l := range streams {
		if found = sc.descendStream(l, b, d, text, found); sc.done(found) {
			return found
		}
	}
	return sc.descendBlocks(b, d, found)
}

// search returns where the needles are in b.
func (sc *scanner) search(b []byte, text bool) []span {
	var found []span
	for _, n := range sc.set.needles {
		if len(n) < MinLen && !text {
			continue
		}
		for i := 0; ; {
			j := bytes.Index(b[i:], n)
			if j < 0 {
				break
			}
			found = append(found, span{i + j, i + j + len(n)})
			if sc.first {
				return found
			}
			i += j + len(n)
		}
	}
	return found
}

// afford takes n bytes from the budget, if there are that many left and
// the scan's context has not ended; an ended context empties the budget.
func (sc *scanner) afford(n int) bool {
	if sc.unchecked += n; sc.unchecked >= checkEvery {
		sc.unchecked = 0
		if sc.ctx.Err() != nil {
			sc.budget = 0
		}
	}
	if n > sc.budget {
		sc.exhausted = true
		return false
	}
	sc.budget -= n
	sc.spent += n
	return true
}

// descendStream decodes each run of layer l in b, scans it, and adds to
// found the spans of b that spell what it finds there.
func (sc *scanner) descendStream(l *stream, b []byte, d int, text bool, found []span) []span {
	line := span{0, -1}
	for pos := 0; pos < len(b); {
		j := bytes.IndexByte(b[pos:], l.trigger)
		if j < 0 {
			break
		}
		start := pos + j
		delim := l.delimAt(b, start, &line)
		for start > pos && !delim[b[start-1]] {
			start--
		}
		data, end, escapes := l.decode(sc.buf[d+1][:0], b, start, delim)
		sc.buf[d+1] = data
		pos = end
		if escapes == 0 {
			continue
		}
		if !sc.afford(len(data)) {
			found = append(found, span{start, end})
		} else if sub := merge(sc.find(data, d+1, text)); len(sub) > 0 {
			for _, sp := range l.remap(b[start:end], sub) {
				found = append(found, span{start + sp.start, start + sp.end})
			}
		}
		if sc.done(found) {
			break
		}
	}
	return found
}

// descendBlocks decodes each run of a block layer in b, from each
// possible start, scans it, and adds to found each run in which it finds
// something. Base64's alphabet holds base32's and hex's, and its runs end
// where theirs do: their runs are looked for only inside its runs that are
// long enough to matter.
func (sc *scanner) descendBlocks(b []byte, d int, found []span) []span {
	b64 := blocks[0]
	b64.runs(b, sc.least(b64), func(start, end, chars int) bool {
		found = sc.descendRun(b64, b, start, end, chars, d, found)
		for _, l := range blocks[1:] {
			if sc.done(found) {
				return false
			}
			l.runs(b[start:end], sc.least(l), func(s, e, chars int) bool {
				found = sc.descendRun(l, b, start+s, start+e, chars, d, found)
				return !sc.done(found)
			})
		}
		return !sc.done(found)
	})
	return found
}

// least returns the fewest characters of layer l that may hold a needle:
// a long one anywhere, or a short one alone.
func (sc *scanner) least(l *block) int {
	n := sc.set.minLong
	if n == 0 || sc.set.minShort > 0 {
		n = sc.set.minShort
	}
	return (n*8 + l.bits - 1) / l.bits
}

// descendRun decodes the run b[start:end] of layer l, which has chars
// alphabet characters, from each of its first l.group characters, and
// scans what that gives for long needles; decoded from its start, it may
// also be exactly a short needle. If a decoding holds a needle, the whole
// run is added to found.
func (sc *scanner) descendRun(l *block, b []byte, start, end, chars, d int, found []span) []span {
	long := 0 // characters that may hold the shortest long needle
	if sc.set.minLong > 0 {
		long = (sc.set.minLong*8 + l.bits - 1) / l.bits
	}
	for skip := 0; skip < l.group; skip++ {
		if skip > 0 && (long == 0 || chars-skip < long) {
			break
		}
		if !sc.afford((chars - skip) * l.bits / 8) {
			return append(found, span{start, end})
		}
		data := l.decode(sc.buf[d+1][:0], b[start:end], skip)
		sc.buf[d+1] = data
		if skip == 0 && sc.exact(data) || long > 0 && chars-skip >= long && sc.any(data, d+1) {
			return append(found, span{start, end})
		}
	}
	return found
}

// any reports whether b, a decoded run d layers deep, holds a long needle:
// where, the caller does not need, since it replaces the whole run.
func (sc *scanner) any(b []byte, d int) bool {
	first := sc.first
	sc.first = true
	found := sc.find(b, d, false)
	sc.first = first
	return len(found) > 0
}

// exact reports whether data, but for surrounding whitespace, is a short
// needle.
func (sc *scanner) exact(data []byte) bool {
	if sc.set.minShort == 0 {
		return false
	}
	data = bytes.TrimSpace(data)
	for _, n := range sc.set.needles {
		if len(n) < MinLen && bytes.Equal(data, n) {
			return true
		}
	}
	return false
}
