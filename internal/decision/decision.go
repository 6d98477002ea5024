// Package decision signs and verifies policy's decisions and computes the
// call hash both sides agree on: the sha256 of the call's input in canonical
// JSON. Policy signs; the runner (and later the broker) verify, recompute the
// hash from the input they are given, and refuse any mismatch.
package decision

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/signature"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// MaxInputBytes caps a call's input.
const MaxInputBytes = 1 << 20

// maxDepth caps the nesting of a call's input.
const maxDepth = 64

// Canonical returns the canonical JSON of input: one JSON value, object keys
// sorted, no insignificant whitespace, numbers as written, no HTML escaping.
// Duplicate object keys are refused, since they make a value ambiguous.
func Canonical(input []byte) ([]byte, error) {
	if len(input) > MaxInputBytes {
		return nil, errs.E(errs.Invalid, "input is %d bytes, over the %d byte limit", len(input), MaxInputBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return nil, errs.E(errs.Invalid, "input is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errs.E(errs.Invalid, "input is not valid JSON: data after the value")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "encoding canonical input")
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// decodeValue reads one value token by token, so that duplicate keys and
// excessive depth are caught.
func decodeValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k := kt.(string) // the decoder only yields string keys
				if _, dup := obj[k]; dup {
					return nil, fmt.Errorf("duplicate key %q", k)
				}
				if obj[k], err = decodeValue(dec, depth+1); err != nil {
					return nil, err
				}
			}
			_, err := dec.Token()
			return obj, err
		case '[':
			arr := []any{}
			for dec.More() {
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			_, err := dec.Token()
			return arr, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	}
	return tok, nil
}

// Hash returns "sha256:<hex>" of b.
func Hash(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ActionKey returns the idempotency key of a job's call: the run's id and
// the hash of the action, the run's step making it, the tool and its
// canonical input's hash, as "<run id>.<32 hex digits>". The worker
// records it with the step before the call; the runner derives the keys of
// the call's HTTP requests from it (RequestKey). Retrying the call in the
// same run gives the same key; two steps making the same call get two.
func ActionKey(runID, step, tool, inputHash string) string {
	sum := sha256.Sum256([]byte(step + "\x00" + tool + "\x00" + inputHash))
	return runID + "." + hex.EncodeToString(sum[:16])
}

// RequestKey returns the idempotency key of the n-th HTTP request (from 1)
// of the call whose action key is action: "<action key>.<n>".
func RequestKey(action string, n int) string {
	return action + "." + strconv.Itoa(n)
}

// NewKeyset creates a fresh Ed25519 signing keyset.
func NewKeyset() (*keyset.Handle, error) {
	return keyset.NewHandle(signature.ED25519KeyTemplate())
}

// MarshalPrivate serializes a signing keyset in the clear, for policy's own
// store and nowhere else.
func MarshalPrivate(h *keyset.Handle) ([]byte, error) {
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewBinaryWriter(&buf)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// UnmarshalPrivate reads a keyset written by MarshalPrivate.
func UnmarshalPrivate(b []byte) (*keyset.Handle, error) {
	return insecurecleartextkeyset.Read(keyset.NewBinaryReader(bytes.NewReader(b)))
}

// MarshalPublic serializes the public half of a signing keyset.
func MarshalPublic(h *keyset.Handle) ([]byte, error) {
	pub, err := h.Public()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := pub.WriteWithNoSecrets(keyset.NewBinaryWriter(&buf)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Signer signs decisions.
type Signer struct{ s tink.Signer }

// NewSigner returns a Signer for a private keyset.
func NewSigner(h *keyset.Handle) (*Signer, error) {
	s, err := signature.NewSigner(h)
	if err != nil {
		return nil, err
	}
	return &Signer{s}, nil
}

// Sign encodes d deterministically and signs the encoding.
func (s *Signer) Sign(d *contractualv1.Decision) (*contractualv1.SignedDecision, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(d)
	if err != nil {
		return nil, err
	}
	sig, err := s.s.Sign(b)
	if err != nil {
		return nil, err
	}
	return &contractualv1.SignedDecision{Decision: b, Signature: sig}, nil
}

// Verifier verifies signed decisions.
type Verifier struct{ v tink.Verifier }

// NewVerifier returns a Verifier for a public keyset written by
// MarshalPublic.
func NewVerifier(public []byte) (*Verifier, error) {
	h, err := keyset.ReadWithNoSecrets(keyset.NewBinaryReader(bytes.NewReader(public)))
	if err != nil {
		return nil, err
	}
	v, err := signature.NewVerifier(h)
	if err != nil {
		return nil, err
	}
	return &Verifier{v}, nil
}

// ErrInvalid is wrapped by every refusal of Verify.
var ErrInvalid = errors.New("invalid decision")

// Verify checks sd's signature, then that the decision allows the call, has
// not expired at now, and decides exactly the call whose canonical input is
// input. It returns the decision.
func (v *Verifier) Verify(sd *contractualv1.SignedDecision, input []byte, now time.Time) (*contractualv1.Decision, error) {
	if sd == nil || len(sd.GetDecision()) == 0 {
		return nil, errs.E(errs.PermissionDenied, "%w: no decision", ErrInvalid)
	}
	if err := v.v.Verify(sd.GetSignature(), sd.GetDecision()); err != nil {
		return nil, errs.E(errs.PermissionDenied, "%w: bad signature", ErrInvalid)
	}
	d := new(contractualv1.Decision)
	if err := proto.Unmarshal(sd.GetDecision(), d); err != nil {
		return nil, errs.E(errs.PermissionDenied, "%w: undecodable: %v", ErrInvalid, err)
	}
	if d.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW {
		return nil, errs.E(errs.PermissionDenied, "%w: decision %s is %s, not allow", ErrInvalid, d.GetId(), d.GetVerdict())
	}
	if exp := d.GetExpiresAt(); exp == nil || !now.Before(exp.AsTime()) {
		return nil, errs.E(errs.PermissionDenied, "%w: decision %s has expired", ErrInvalid, d.GetId())
	}
	canon, err := Canonical(input)
	if err != nil {
		return nil, err
	}
	if h := Hash(canon); h != d.GetInputHash() {
		return nil, errs.E(errs.PermissionDenied, "%w: decision %s is for input %s, not %s", ErrInvalid, d.GetId(), d.GetInputHash(), h)
	}
	return d, nil
}
