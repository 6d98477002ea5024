// Package paging is the list procedures' pagination (AIP-158): page sizes
// and opaque page tokens.
//
// A page token is a keyset cursor: the sort key of the last row a page
// served, so that the next page starts right after that row, whatever was
// inserted or deleted meanwhile (an OFFSET would skip or repeat rows), and
// costs O(page) on an index. A token names the list it belongs to and a
// digest of the request's filters: a token of another list, of the same
// list with other filters, or a damaged one is refused (errs.Invalid). It
// is not secret and not signed: a forged cursor only starts a list the
// caller may read anyway at another row.
package paging

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"

	"github.com/contractual/contractual/internal/errs"
)

// Page sizes.
const (
	// DefaultSize is the page size of a request that sets none.
	DefaultSize = 50
	// MaxSize is the largest page; a larger size is taken as MaxSize.
	MaxSize = 500
	// maxToken bounds a token's length, well above any real one.
	maxToken = 1024
)

// Size returns the page size a request asks for: DefaultSize for 0, at most
// MaxSize; a negative size is errs.Invalid.
func Size(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, errs.E(errs.Invalid, "page_size %d is negative", n)
	case n == 0:
		return DefaultSize, nil
	case n > MaxSize:
		return MaxSize, nil
	}
	return int(n), nil
}

// token is a page token before encoding.
type token struct {
	// List names the list ("contracts").
	List string `json:"l"`
	// Filter is the digest of the request's filters (see digest).
	Filter string `json:"f"`
	// Key is the sort key of the last row served.
	Key json.RawMessage `json:"k"`
}

// Encode returns the token of the page after the row whose sort key is key,
// in list with filters filter (any string that differs when the filters
// do). key must encode to JSON.
func Encode(list, filter string, key any) string {
	k, err := json.Marshal(key)
	if err != nil {
		panic("paging: a sort key that does not encode: " + err.Error())
	}
	b, err := json.Marshal(token{List: list, Filter: digest(filter), Key: k})
	if err != nil {
		panic("paging: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode reads tok, a token Encode made for list and filter, into key. It
// returns false for the empty token (the first page), and errs.Invalid for
// a token that is damaged or was made for another list or other filters.
func Decode(tok, list, filter string, key any) (bool, error) {
	if tok == "" {
		return false, nil
	}
	bad := func(why string) error {
		return errs.E(errs.Invalid, "page_token is not a token of this list with these filters (%s): start again from the first page", why)
	}
	if len(tok) > maxToken {
		return false, bad("too long")
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return false, bad("not base64url")
	}
	var t token
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&t); err != nil || d.More() {
		return false, bad("malformed")
	}
	switch {
	case t.List != list:
		return false, bad("another list's")
	case t.Filter != digest(filter):
		return false, bad("other filters'")
	}
	kd := json.NewDecoder(bytes.NewReader(t.Key))
	kd.DisallowUnknownFields()
	if err := kd.Decode(key); err != nil || kd.More() {
		return false, bad("malformed key")
	}
	return true, nil
}

// digest is a short digest of a filter: it tells filters apart and keeps
// tokens short whatever the filters hold.
func digest(filter string) string {
	sum := sha256.Sum256([]byte(filter))
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}
