package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/tailnet"
)

// Limits on what one Append may carry.
const (
	// MaxAppend is the most events one Append takes.
	MaxAppend = 1000
	// MaxDetailBytes caps an event's detail.
	MaxDetailBytes = 4096
	// MaxEgressRecords caps an event's egress records: a contract allows
	// at most 1000 requests per call, each followed by at most 5 redirects.
	MaxEgressRecords = 6000

	maxActionBytes = 64
	maxShortBytes  = 256 // service, principal, outcome, tool, decision id
	maxDigestBytes = 128 // digests and hashes, "sha256:<hex>" is 71
	maxMethodBytes = 16
	maxURLBytes    = 4096
	maxReasonBytes = 4096
	maxRedirect    = 100
)

// actionPattern is what an action looks like: "contract.approve",
// "call.run", "secret.write".
var actionPattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]*$`)

// Field numbers of AuditEvent that the log sets; encode writes them in
// front of the caller's fields, which all have higher numbers.
const (
	fieldIndex protowire.Number = 1
	fieldTime  protowire.Number = 2
)

// deterministic is the one encoding the log uses.
var deterministic = proto.MarshalOptions{Deterministic: true}

// encodeBodies validates events and encodes each without the fields the
// log sets. It runs in the caller's goroutine, so that a bad event fails
// its own Append and never a batch.
func encodeBodies(events []*contractualv1.AuditEvent) ([][]byte, error) {
	if len(events) == 0 {
		return nil, errs.E(errs.Invalid, "audit: no events to append")
	}
	if len(events) > MaxAppend {
		return nil, errs.E(errs.Invalid, "audit: %d events in one append, over the limit of %d", len(events), MaxAppend)
	}
	bodies := make([][]byte, len(events))
	for i, e := range events {
		if err := validateEvent(e); err != nil {
			return nil, errs.E(errs.Invalid, "audit: events[%d]: %v", i, err)
		}
		b, err := encodeBody(e)
		if err != nil {
			return nil, errs.E(errs.Invalid, "audit: events[%d]: %v", i, err)
		}
		bodies[i] = b
	}
	return bodies, nil
}

// encodeBody returns the deterministic encoding of e without index, time,
// hash and unknown fields.
func encodeBody(e *contractualv1.AuditEvent) ([]byte, error) {
	c := proto.Clone(e).(*contractualv1.AuditEvent)
	c.Index, c.Time, c.Hash = 0, nil, nil
	compact(c)
	dropUnknown(c.ProtoReflect())
	return deterministic.Marshal(c)
}

// compact moves each digest of the form "sha256:<64 lowercase hex>" of e
// into its bytes field (32 bytes instead of 71), and clears bytes fields
// that do not come from such a digest: only the log sets them. Nothing
// else changes, so expand gives back exactly the caller's event.
func compact(e *contractualv1.AuditEvent) {
	e.ContractSha256, e.ContractDigest = pack(e.ContractDigest)
	e.ModuleSha256, e.ModuleDigest = pack(e.ModuleDigest)
	e.InputSha256, e.InputHash = pack(e.InputHash)
	e.OutputSha256, e.OutputHash = pack(e.OutputHash)
}

// pack returns the 32 bytes of digest d and "" if d is "sha256:" and 64
// lowercase hex digits, else nil and d.
func pack(d string) ([]byte, string) {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 2*sha256.Size {
		return nil, d
	}
	b, err := hex.DecodeString(h)
	if err != nil || hex.EncodeToString(b) != h { // upper case would not come back
		return nil, d
	}
	return b, ""
}

// expand undoes compact: a stored event as the caller appended it.
func expand(e *contractualv1.AuditEvent) {
	for _, f := range []struct {
		b *[]byte
		s *string
	}{
		{&e.ContractSha256, &e.ContractDigest}, {&e.ModuleSha256, &e.ModuleDigest},
		{&e.InputSha256, &e.InputHash}, {&e.OutputSha256, &e.OutputHash},
	} {
		if len(*f.b) == sha256.Size && *f.s == "" {
			*f.s = "sha256:" + hex.EncodeToString(*f.b)
		}
		*f.b = nil
	}
}

// dropUnknown removes unknown fields from m and the messages it holds.
func dropUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Message() == nil || fd.IsMap():
		case fd.IsList():
			for i, l := 0, v.List(); i < l.Len(); i++ {
				dropUnknown(l.Get(i).Message())
			}
		default:
			dropUnknown(v.Message())
		}
		return true
	})
}

// encode returns the deterministic encoding of the event whose other fields
// are body, at index idx and time t. Deterministic encoding writes fields in
// number order, and index and time are fields 1 and 2, so this is the
// encoding of the whole event (TestEncodeIsDeterministicMarshal).
func encode(idx uint64, t time.Time, body []byte) []byte {
	var ts []byte
	if s := t.Unix(); s != 0 {
		ts = protowire.AppendTag(ts, 1, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(s))
	}
	if n := t.Nanosecond(); n != 0 {
		ts = protowire.AppendTag(ts, 2, protowire.VarintType)
		ts = protowire.AppendVarint(ts, uint64(n))
	}
	b := make([]byte, 0, 16+len(ts)+len(body))
	b = protowire.AppendTag(b, fieldIndex, protowire.VarintType)
	b = protowire.AppendVarint(b, idx)
	b = protowire.AppendTag(b, fieldTime, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	return append(b, body...)
}

// link returns the chain hash after prev for an event encoded as enc.
func link(prev [32]byte, enc []byte) [32]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(enc)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// checkpoint is a signed statement: the chain hash at index idx was hash.
type checkpoint struct {
	seq  uint64 // 1, 2, ... with no gap
	idx  uint64
	hash []byte
	time int64 // unix nanoseconds
	sig  []byte
}

// checkpointDomain separates checkpoint signatures from anything else the
// key could ever sign.
const checkpointDomain = "contractual.audit.checkpoint.v1\x00"

// payload is what the signature covers: every field of the checkpoint.
func (c checkpoint) payload() []byte {
	b := make([]byte, 0, len(checkpointDomain)+24+len(c.hash))
	b = append(b, checkpointDomain...)
	b = binary.BigEndian.AppendUint64(b, c.seq)
	b = binary.BigEndian.AppendUint64(b, c.idx)
	b = binary.BigEndian.AppendUint64(b, uint64(c.time))
	return append(b, c.hash...)
}

// validateEvent checks that e's fields are sane. Index, time and hash are
// not checked: the log overwrites them.
func validateEvent(e *contractualv1.AuditEvent) error {
	if e == nil {
		return fmt.Errorf("no event")
	}
	a := e.GetAction()
	switch {
	case a == "":
		return fmt.Errorf("action is empty")
	case len(a) > maxActionBytes:
		return fmt.Errorf("action is %d bytes, over %d", len(a), maxActionBytes)
	case !actionPattern.MatchString(a):
		return fmt.Errorf("action %q is not lowercase words joined by '.', '_' or '-'", a)
	}
	if err := checkStrings(
		field{"service", e.GetService(), maxShortBytes},
		field{"principal", e.GetPrincipal(), maxShortBytes},
		field{"outcome", e.GetOutcome(), maxShortBytes},
		field{"contract_digest", e.GetContractDigest(), maxDigestBytes},
		field{"module_digest", e.GetModuleDigest(), maxDigestBytes},
		field{"tool", e.GetTool(), maxShortBytes},
		field{"input_hash", e.GetInputHash(), maxDigestBytes},
		field{"output_hash", e.GetOutputHash(), maxDigestBytes},
		field{"detail", e.GetDetail(), MaxDetailBytes},
		field{"decision_id", e.GetDecisionId(), maxShortBytes},
	); err != nil {
		return err
	}
	if e.GetDurationUs() < 0 {
		return fmt.Errorf("duration_us is negative")
	}
	if t := e.GetTailnet(); t != nil {
		if _, err := tailnet.FromProto(t); err != nil {
			return err
		}
	}
	return validateEgress(e.GetEgress())
}

// validateEgress checks an event's egress records.
func validateEgress(recs []*contractualv1.EgressRecord) error {
	if len(recs) > MaxEgressRecords {
		return fmt.Errorf("%d egress records, over %d", len(recs), MaxEgressRecords)
	}
	for i, r := range recs {
		if err := validateRecord(r); err != nil {
			return fmt.Errorf("egress[%d]: %v", i, err)
		}
	}
	return nil
}

// validateRecord checks one egress record.
func validateRecord(r *contractualv1.EgressRecord) error {
	if r == nil {
		return fmt.Errorf("no record")
	}
	if err := checkStrings(
		field{"method", r.GetMethod(), maxMethodBytes},
		field{"url", r.GetUrl(), maxURLBytes},
		field{"reason", r.GetReason(), maxReasonBytes},
	); err != nil {
		return err
	}
	switch {
	case r.GetStatus() < 0 || r.GetStatus() > 999:
		return fmt.Errorf("status %d is not an HTTP status", r.GetStatus())
	case r.GetBytes() < 0:
		return fmt.Errorf("bytes is negative")
	case r.GetRule() < -1:
		return fmt.Errorf("rule %d is below -1", r.GetRule())
	case r.GetRedirect() < 0 || r.GetRedirect() > maxRedirect:
		return fmt.Errorf("redirect %d is out of range 0..%d", r.GetRedirect(), maxRedirect)
	}
	return nil
}

// field is one string field and its size limit.
type field struct {
	name, value string
	max         int
}

// checkStrings checks each field's length and that it is UTF-8.
func checkStrings(fields ...field) error {
	for _, f := range fields {
		if len(f.value) > f.max {
			return fmt.Errorf("%s is %d bytes, over %d", f.name, len(f.value), f.max)
		}
		if !utf8.ValidString(f.value) {
			return fmt.Errorf("%s is not valid UTF-8", f.name)
		}
	}
	return nil
}
