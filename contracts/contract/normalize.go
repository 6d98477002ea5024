package contract

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// limit describes one field of Limits: its default, its maximum, and the
// capability it needs, if any (then it defaults to 0 without it).
type limit struct {
	name  protoreflect.Name
	def   uint64
	max   uint64
	needs string // the capability field, for messages
	grant func(*contractualv1.Capabilities) bool
}

const (
	kib = 1 << 10
	mib = 1 << 20
)

// limits are the fields of Limits, in field order. Zero means default.
var limits = []limit{
	{name: "memory_mib", def: 16, max: 4096},
	{name: "timeout_ms", def: 1000, max: 300_000},
	{name: "output_bytes", def: 1 * mib, max: 64 * mib},
	{name: "http_requests", def: 8, max: 1000, needs: "http", grant: func(c *contractualv1.Capabilities) bool {
		return len(c.GetHttp()) > 0
	}},
	{name: "http_response_bytes", def: 1 * mib, max: 64 * mib},
	{name: "log_bytes", def: 16 * kib, max: 1 * mib, needs: "log", grant: func(c *contractualv1.Capabilities) bool {
		return c.GetLog() != nil
	}},
	{name: "stdio_bytes", def: 16 * kib, max: 1 * mib, needs: "wasi", grant: func(c *contractualv1.Capabilities) bool {
		return c.GetWasi() != nil
	}},
	{name: "host_calls", def: 10_000, max: 1_000_000},
}

var limitsDesc = (&contractualv1.Limits{}).ProtoReflect().Descriptor()

// get returns the value of l in m.
func (l limit) get(m *contractualv1.Limits) uint64 {
	return m.ProtoReflect().Get(limitsDesc.Fields().ByName(l.name)).Uint()
}

// set sets l in m to v, which fits: max is below 2^32 for the uint32 fields.
func (l limit) set(m *contractualv1.Limits, v uint64) {
	fd := limitsDesc.Fields().ByName(l.name)
	val := protoreflect.ValueOfUint64(v)
	if fd.Kind() == protoreflect.Uint32Kind {
		val = protoreflect.ValueOfUint32(uint32(v))
	}
	m.ProtoReflect().Set(fd, val)
}

// granted reports whether the capability l needs is granted.
func (l limit) granted(c *contractualv1.Capabilities) bool {
	return l.grant == nil || l.grant(c)
}

// limits checks that every limit is in range, and that the ones tied to a
// capability are set only with it.
func (ps *problems) limits(m *contractualv1.Limits, c *contractualv1.Capabilities) {
	if m == nil {
		return
	}
	for _, l := range limits {
		v, path := l.get(m), joinField("limits", string(l.name))
		switch {
		case v == 0:
		case !l.granted(c):
			ps.addf(path, "is set, but capabilities.%s is not granted", l.needs)
		case v > l.max:
			ps.addf(path, "%s is above the maximum, %s", formatLimit(l.name, v), formatLimit(l.name, l.max))
		}
	}
}

// Normalize rewrites c, in place, into the normal form its digest is
// computed on, so that contracts that mean the same have the same digest:
//
//   - a tool's input_format json is cleared to unset (its default);
//   - capabilities and limits are present (empty capabilities grant nothing);
//   - every zero limit is set to its default (0 for a limit whose
//     capability is not granted);
//   - egress rules: scheme and host lowercased, port 0 set to the scheme's
//     default, empty path_prefix set to "/", methods uppercased, sorted and
//     de-duplicated, secrets sorted by header;
//   - secret injections: header in canonical form (e.g. "Authorization"),
//     empty format set to "{{secret}}".
//
// It keeps the order of tools and egress rules, which Diff reports, and
// changes nothing else. Normalize is idempotent and never fails; call
// Validate first, as it does not make an invalid contract valid.
func Normalize(c *contractualv1.Contract) {
	if c == nil {
		return
	}
	for _, t := range c.GetTools() {
		if t.GetInputFormat() == contractualv1.InputFormat_INPUT_FORMAT_JSON {
			t.InputFormat = contractualv1.InputFormat_INPUT_FORMAT_UNSPECIFIED
		}
	}
	if c.Capabilities == nil {
		c.Capabilities = &contractualv1.Capabilities{}
	}
	for _, r := range c.Capabilities.GetHttp() {
		normalizeRule(r)
	}
	if c.Limits == nil {
		c.Limits = &contractualv1.Limits{}
	}
	for _, l := range limits {
		if l.get(c.Limits) == 0 && l.granted(c.Capabilities) {
			l.set(c.Limits, l.def)
		}
	}
}

// normalizeRule normalizes one egress rule; see Normalize.
func normalizeRule(r *contractualv1.EgressRule) {
	if r == nil {
		return
	}
	r.Scheme = strings.ToLower(r.Scheme)
	r.Host = strings.ToLower(r.Host)
	if r.Port == 0 {
		r.Port = defaultPort(r.Scheme)
	}
	if r.PathPrefix == "" {
		r.PathPrefix = "/"
	}
	for i, m := range r.Methods {
		r.Methods[i] = strings.ToUpper(m)
	}
	slices.Sort(r.Methods)
	r.Methods = slices.Compact(r.Methods)
	for _, s := range r.Secrets {
		if s == nil {
			continue
		}
		s.Header = textproto.CanonicalMIMEHeaderKey(s.Header)
		if s.Format == "" {
			s.Format = secretPlaceholder
		}
	}
	slices.SortStableFunc(r.Secrets, func(a, b *contractualv1.SecretInjection) int {
		return cmp.Or(cmp.Compare(a.GetHeader(), b.GetHeader()), cmp.Compare(a.GetName(), b.GetName()))
	})
}

// defaultPort returns the port a scheme implies, or 0 for an unknown one.
func defaultPort(scheme string) uint32 {
	switch scheme {
	case "https":
		return 443
	case "http":
		return 80
	}
	return 0
}

// ruleID is an egress rule's identity: two rules with the same one are the
// same rule, whatever their methods and secrets.
type ruleID struct {
	scheme, host string
	port         uint32
	pathPrefix   string
}

// identity returns r's identity, normalized.
func identity(r *contractualv1.EgressRule) ruleID {
	n := proto.CloneOf(r)
	normalizeRule(n)
	return ruleID{n.GetScheme(), n.GetHost(), n.GetPort(), n.GetPathPrefix()}
}

// String returns the identity as a URL prefix, leaving out a default port:
// "https://api.example.com/v1/".
func (id ruleID) String() string {
	host := id.host
	if id.port != defaultPort(id.scheme) {
		host += ":" + strconv.FormatUint(uint64(id.port), 10)
	}
	return id.scheme + "://" + host + id.pathPrefix
}

// Canonical returns the canonical encoding of c: the deterministic protobuf
// encoding of its normal form (see Normalize). It does not modify c. Two
// contracts that differ only in how they were written (YAML or JSON, key
// order, comments, defaults spelled out or not) have the same encoding.
func Canonical(c *contractualv1.Contract) ([]byte, error) {
	if c == nil {
		return nil, errs.E(errs.Invalid, "contract is missing")
	}
	n := proto.CloneOf(c)
	Normalize(n)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(n)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "encoding contract")
	}
	return b, nil
}

// Digest returns the contract's digest, "sha256:" and the hex sha256 of its
// canonical encoding. Approval binds this digest.
func Digest(c *contractualv1.Contract) (string, error) {
	b, err := Canonical(c)
	if err != nil {
		return "", err
	}
	return sha256Digest(b), nil
}

// ModuleDigest returns the digest of a module's bytes, the value of a
// contract's module field: "sha256:" and 64 lowercase hex digits.
func ModuleDigest(wasm []byte) string {
	return sha256Digest(wasm)
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
