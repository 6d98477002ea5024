package secretscan

// The implementation before layered decoding: a fixed list of spellings
// looked for with bytes.Contains. Kept as the benchmarks' baseline.

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// baselineSet is the spellings of some secrets, longest first.
type baselineSet struct{ spellings [][]byte }

// newBaseline returns the baselineSet of secrets' spellings; empty secrets are ignored.
func newBaseline(secrets [][]byte) *baselineSet {
	seen := map[string]bool{}
	var out [][]byte
	for _, secret := range secrets {
		if len(secret) == 0 {
			continue
		}
		s := string(secret)
		h := hex.EncodeToString(secret)
		j, _ := json.Marshal(s) // a string always marshals
		forms := []string{
			s,
			base64.StdEncoding.EncodeToString(secret),
			base64.RawStdEncoding.EncodeToString(secret),
			base64.URLEncoding.EncodeToString(secret),
			base64.RawURLEncoding.EncodeToString(secret),
			h, strings.ToUpper(h),
			url.QueryEscape(s), url.PathEscape(s),
			string(j[1 : len(j)-1]),
		}
		forms = append(forms, shifted(secret, base64.StdEncoding)...)
		forms = append(forms, shifted(secret, base64.URLEncoding)...)
		for _, f := range forms {
			if f != "" && !seen[f] {
				seen[f] = true
				out = append(out, []byte(f))
			}
		}
	}
	// Longest first, so that a longer spelling is replaced before a shorter
	// one inside it.
	slices.SortFunc(out, func(a, b []byte) int { return cmp.Compare(len(b), len(a)) })
	return &baselineSet{out}
}

// minShifted is the shortest base64 core worth looking for: shorter ones
// would match unrelated text.
const minShifted = 8

// shifted returns the parts of base64 encodings of secret that do not
// depend on what precedes it. Base64 encodes three bytes at a time, so a
// secret after a prefix ("Bearer " + key, say) encodes differently for each
// of the three possible alignments; the groups made only of secret bytes
// are the same whatever the prefix and suffix.
func shifted(secret []byte, enc *base64.Encoding) []string {
	var out []string
	for shift := range 3 {
		b := append(make([]byte, shift), secret...)
		e := enc.EncodeToString(b)
		first := (shift + 2) / 3 * 4          // first group of secret bytes only
		last := (shift + len(secret)) / 3 * 4 // end of the last full group
		if last-first >= minShifted {
			out = append(out, e[first:last])
		}
	}
	return out
}

// Empty reports whether the set has no secret.
func (s *baselineSet) Empty() bool { return len(s.spellings) == 0 }

// Contains reports whether b holds any spelling of any secret.
func (s *baselineSet) Contains(b []byte) bool {
	for _, sp := range s.spellings {
		if bytes.Contains(b, sp) {
			return true
		}
	}
	return false
}

// Redact returns b with every spelling of every secret replaced by
// Redacted; b itself if there is none.
func (s *baselineSet) Redact(b []byte) []byte {
	for _, sp := range s.spellings {
		if bytes.Contains(b, sp) {
			b = bytes.ReplaceAll(b, sp, []byte(Redacted))
		}
	}
	return b
}
