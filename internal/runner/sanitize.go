package runner

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"slices"
	"strings"

	"github.com/contractual/contractual/internal/errs"
)

// redacted replaces every secret value found in what a module produced.
const redacted = "[REDACTED]"

// redact returns b with every spelling (see spellings) of every secret
// replaced by redacted. The module never sees a secret value, but a server
// may echo one back in a response the module reads and repeats.
func redact(b []byte, secrets [][]byte) []byte {
	if len(secrets) == 0 || len(b) == 0 {
		return b
	}
	for _, s := range spellings(secrets) {
		if bytes.Contains(b, s) {
			b = bytes.ReplaceAll(b, s, []byte(redacted))
		}
	}
	return b
}

// redactError returns err with its message redacted, keeping its kind.
func redactError(err error, secrets [][]byte) error {
	if len(secrets) == 0 {
		return err
	}
	msg := err.Error()
	clean := string(redact([]byte(msg), secrets))
	if clean == msg {
		return err
	}
	return errs.E(errs.KindOf(err), "%s", clean)
}

// spellings returns the ways a secret commonly appears in text: raw,
// base64 (standard and URL alphabets, padded or not), hex (either case),
// URL-encoded (query and path) and JSON-escaped; longest first, so that a
// longer spelling is replaced before a shorter one inside it.
func spellings(secrets [][]byte) [][]byte {
	seen := map[string]bool{}
	var out [][]byte
	for _, secret := range secrets {
		if len(secret) == 0 {
			continue
		}
		s := string(secret)
		h := hex.EncodeToString(secret)
		j, _ := json.Marshal(s)
		for _, f := range []string{
			s,
			base64.StdEncoding.EncodeToString(secret),
			base64.RawStdEncoding.EncodeToString(secret),
			base64.URLEncoding.EncodeToString(secret),
			base64.RawURLEncoding.EncodeToString(secret),
			h, strings.ToUpper(h),
			url.QueryEscape(s), url.PathEscape(s),
			string(j[1 : len(j)-1]),
		} {
			if f != "" && !seen[f] {
				seen[f] = true
				out = append(out, []byte(f))
			}
		}
	}
	slices.SortFunc(out, func(a, b []byte) int { return cmp.Compare(len(b), len(a)) })
	return out
}
