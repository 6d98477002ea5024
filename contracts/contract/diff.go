package contract

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// ChangeKind classifies a change by what it does to the module's authority.
type ChangeKind int

const (
	// Changed neither grants nor takes away anything: descriptions,
	// versions, the module digest, schemas, config, order.
	Changed ChangeKind = iota
	// Widened lets the module, or its calls, do more without the owner:
	// a new tool, egress rule, method, secret or capability, a broader
	// host, a shorter path prefix, a higher limit, a lower risk class.
	Widened
	// Narrowed is the reverse of Widened.
	Narrowed
)

// String returns "changed", "widened" or "narrowed".
func (k ChangeKind) String() string {
	switch k {
	case Changed:
		return "changed"
	case Widened:
		return "widened"
	case Narrowed:
		return "narrowed"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// sign returns the character FormatDiff puts in front of a change.
func (k ChangeKind) sign() byte {
	switch k {
	case Widened:
		return '+'
	case Narrowed:
		return '-'
	}
	return '~'
}

// Change is one difference between two contracts.
type Change struct {
	Kind ChangeKind
	// Path names what changed. Tools are named by export and egress rules by
	// identity (as a URL prefix), not by index:
	// "tools[forecast].risk", "capabilities.http[https://api.example.com/v1/].methods".
	Path string
	// Old and New are readable renderings of the values; Old is empty for
	// something added, New for something removed.
	Old, New string
}

// String renders the change on one line: a sign (+ widened, - narrowed,
// ~ changed), the kind, the path and what changed, as in
// "+ widened  capabilities.http[https://api.example.com/v1/].methods: added POST".
func (c Change) String() string {
	var what string
	switch {
	case c.Old == "":
		what = "added " + c.New
	case c.New == "":
		what = "removed " + c.Old
	default:
		what = c.Old + " → " + c.New
	}
	return fmt.Sprintf("%c %-8s %s: %s", c.Kind.sign(), c.Kind, c.Path, strings.TrimSpace(what))
}

// FormatDiff renders changes one per line, or "no changes".
func FormatDiff(changes []Change) string {
	if len(changes) == 0 {
		return "no changes\n"
	}
	var b strings.Builder
	for _, c := range changes {
		b.WriteString(c.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Diff lists every difference between two contracts, each classified, for
// the owner deciding whether to approve new in place of old. It compares the
// normal forms (see Normalize), so it reports no change exactly when the
// digests are equal. Tools are matched by export and egress rules by
// identity, so a reordering is reported as one neutral change of order. Old
// may be nil, for a first contract: then everything in new is added.
func Diff(old, new *contractualv1.Contract) []Change {
	a, b := normalized(old), normalized(new)
	var d differ
	d.header(a, b)
	d.tools(a.GetTools(), b.GetTools())
	d.rules(a.GetCapabilities().GetHttp(), b.GetCapabilities().GetHttp())
	d.config(a.GetCapabilities().GetConfig(), b.GetCapabilities().GetConfig())
	d.grants(a.GetCapabilities(), b.GetCapabilities())
	d.limits(a.GetLimits(), b.GetLimits())
	if len(d) == 0 && !proto.Equal(a, b) {
		// Something this function does not know how to describe; never
		// claim there is no change when the digests differ.
		da, _ := Digest(a)
		db, _ := Digest(b)
		d.add(Changed, "contract", da, db)
	}
	return d
}

// normalized returns a normalized copy of c. For nil, it returns a contract
// that grants nothing, with all limits zero.
func normalized(c *contractualv1.Contract) *contractualv1.Contract {
	if c == nil {
		return &contractualv1.Contract{Capabilities: &contractualv1.Capabilities{}, Limits: &contractualv1.Limits{}}
	}
	n := proto.CloneOf(c)
	Normalize(n)
	return n
}

// differ collects Changes.
type differ []Change

func (d *differ) add(kind ChangeKind, path, old, new string) {
	*d = append(*d, Change{Kind: kind, Path: path, Old: old, New: new})
}

// text records a change of a string field, quoted.
func (d *differ) text(path, old, new string) {
	if old != new {
		d.add(Changed, path, quote(old), quote(new))
	}
}

// quote quotes s, or returns "" for "" (absent).
func quote(s string) string {
	if s == "" {
		return ""
	}
	return strconv.Quote(s)
}

// header compares the identifying fields.
func (d *differ) header(a, b *contractualv1.Contract) {
	d.text("module", a.GetModule(), b.GetModule())
	d.text("name", a.GetName(), b.GetName())
	d.text("version", a.GetVersion(), b.GetVersion())
	d.text("publisher", a.GetPublisher(), b.GetPublisher())
	d.text("description", a.GetDescription(), b.GetDescription())
}

// tools compares the tools, matched by export.
func (d *differ) tools(a, b []*contractualv1.Tool) {
	byExport := func(ts []*contractualv1.Tool) map[string]*contractualv1.Tool {
		m := make(map[string]*contractualv1.Tool, len(ts))
		for _, t := range ts {
			m[t.GetExport()] = t
		}
		return m
	}
	am, bm := byExport(a), byExport(b)
	var common []string
	for _, t := range a {
		path := "tools[" + t.GetExport() + "]"
		if u, ok := bm[t.GetExport()]; ok {
			common = append(common, t.GetExport())
			d.tool(path, t, u)
		} else {
			d.add(Narrowed, path, toolSummary(t), "")
		}
	}
	for _, u := range b {
		if _, ok := am[u.GetExport()]; !ok {
			d.add(Widened, "tools["+u.GetExport()+"]", "", toolSummary(u))
		}
	}
	var newOrder []string
	for _, u := range b {
		if _, ok := am[u.GetExport()]; ok {
			newOrder = append(newOrder, u.GetExport())
		}
	}
	d.order("tools", common, newOrder)
}

// toolSummary describes a tool in one line.
func toolSummary(t *contractualv1.Tool) string {
	return "(risk " + riskName(t.GetRisk()) + ")"
}

// riskName returns "low", "medium", "high" (or the number, if unknown).
func riskName(r contractualv1.Risk) string {
	if v := r.Descriptor().Values().ByNumber(r.Number()); v != nil {
		return enumShortName(v)
	}
	return strconv.Itoa(int(r))
}

// inputFormatName returns "json", "string" or "bytes" (unset is json).
func inputFormatName(f contractualv1.InputFormat) string {
	if f == contractualv1.InputFormat_INPUT_FORMAT_UNSPECIFIED {
		f = contractualv1.InputFormat_INPUT_FORMAT_JSON
	}
	if v := f.Descriptor().Values().ByNumber(f.Number()); v != nil {
		return enumShortName(v)
	}
	return strconv.Itoa(int(f))
}

// tool compares two versions of one tool.
func (d *differ) tool(path string, a, b *contractualv1.Tool) {
	d.text(joinField(path, "description"), a.GetDescription(), b.GetDescription())
	if ra, rb := a.GetRisk(), b.GetRisk(); ra != rb {
		// A lower risk class means fewer calls wait for the owner's approval.
		kind := Narrowed
		if rb < ra {
			kind = Widened
		}
		d.add(kind, joinField(path, "risk"), riskName(ra), riskName(rb))
	}
	if fa, fb := a.GetInputFormat(), b.GetInputFormat(); fa != fb {
		d.add(Changed, joinField(path, "input_format"), inputFormatName(fa), inputFormatName(fb))
	}
	d.schema(joinField(path, "input_schema"), a.GetInputSchema(), b.GetInputSchema())
	d.schema(joinField(path, "output_schema"), a.GetOutputSchema(), b.GetOutputSchema())
}

// order records a change of order of the elements both lists have.
func (d *differ) order(path string, old, new []string) {
	if !slices.Equal(old, new) {
		d.add(Changed, path, "order "+strings.Join(old, ", "), "order "+strings.Join(new, ", "))
	}
}

// rules compares egress rules, matched by identity. An unmatched old rule
// and an unmatched new rule that cover one another (a host made a wildcard,
// a path prefix shortened) are reported as one rule broadened or narrowed.
func (d *differ) rules(a, b []*contractualv1.EgressRule) {
	index := func(rs []*contractualv1.EgressRule) map[ruleID]*contractualv1.EgressRule {
		m := make(map[ruleID]*contractualv1.EgressRule, len(rs))
		for _, r := range rs {
			m[identity(r)] = r
		}
		return m
	}
	am, bm := index(a), index(b)
	var common, newOrder []string
	var gone, came []*contractualv1.EgressRule
	for _, r := range a {
		id := identity(r)
		if u, ok := bm[id]; ok {
			common = append(common, id.String())
			d.rule(rulePath(id), r, u)
		} else {
			gone = append(gone, r)
		}
	}
	for _, u := range b {
		if _, ok := am[identity(u)]; ok {
			newOrder = append(newOrder, identity(u).String())
		} else {
			came = append(came, u)
		}
	}
	for _, r := range gone {
		if i := slices.IndexFunc(came, func(u *contractualv1.EgressRule) bool { return related(identity(r), identity(u)) }); i >= 0 {
			d.moved(r, came[i])
			came = slices.Delete(came, i, i+1)
			continue
		}
		d.add(Narrowed, rulePath(identity(r)), ruleSummary(r), "")
	}
	for _, u := range came {
		d.add(Widened, rulePath(identity(u)), "", ruleSummary(u))
	}
	d.order("capabilities.http", common, newOrder)
}

// rulePath names a rule by identity.
func rulePath(id ruleID) string {
	return "capabilities.http[" + id.String() + "]"
}

// ruleSummary describes a rule's methods and secrets in one line.
func ruleSummary(r *contractualv1.EgressRule) string {
	s := "(" + strings.Join(r.GetMethods(), ", ")
	for i, sec := range r.GetSecrets() {
		if i == 0 {
			s += "; secrets "
		} else {
			s += ", "
		}
		s += secretSummary(sec) + " in " + sec.GetHeader()
	}
	return s + ")"
}

// secretSummary describes one secret injection without its header.
func secretSummary(s *contractualv1.SecretInjection) string {
	if s.GetFormat() == secretPlaceholder {
		return s.GetName()
	}
	return s.GetName() + " as " + strconv.Quote(s.GetFormat())
}

// related reports whether one rule covers the other apart from methods and
// secrets: same scheme and port, and each of host and path prefix equal or
// covering the other's.
func related(a, b ruleID) bool {
	return a.scheme == b.scheme && a.port == b.port &&
		(covers(a.host, b.host) || covers(b.host, a.host)) &&
		(pathCovers(a.pathPrefix, b.pathPrefix) || pathCovers(b.pathPrefix, a.pathPrefix))
}

// covers reports whether every name host pattern p matches, pattern q
// matches too. "*.example.com" covers "a.example.com", "a.b.example.com"
// and "*.a.example.com" (any labels in front of .example.com), and every
// pattern covers itself. It follows the egress proxy's matching.
func covers(p, q string) bool {
	if p == q {
		return true
	}
	suffix, ok := strings.CutPrefix(p, "*")
	return ok && strings.HasSuffix(q, suffix) && len(q) > len(suffix)
}

// pathCovers reports whether every path prefix p allows, prefix q allows
// too: prefixes match at segment boundaries, so "/v1" covers "/v1/x" but not
// "/v1x".
func pathCovers(p, q string) bool {
	switch {
	case p == q:
		return true
	case !strings.HasPrefix(q, p):
		return false
	}
	return strings.HasSuffix(p, "/") || q[len(p)] == '/'
}

// moved reports a rule whose host or path prefix changed, as one rule.
func (d *differ) moved(a, b *contractualv1.EgressRule) {
	ia, ib := identity(a), identity(b)
	path := rulePath(ia)
	if ia.host != ib.host {
		kind := Narrowed
		if covers(ib.host, ia.host) {
			kind = Widened
		}
		d.add(kind, joinField(path, "host"), ia.host, ib.host)
	}
	if ia.pathPrefix != ib.pathPrefix {
		kind := Narrowed
		if pathCovers(ib.pathPrefix, ia.pathPrefix) {
			kind = Widened
		}
		d.add(kind, joinField(path, "path_prefix"), ia.pathPrefix, ib.pathPrefix)
	}
	d.rule(path, a, b)
}

// rule compares the methods and secrets of two versions of one rule.
func (d *differ) rule(path string, a, b *contractualv1.EgressRule) {
	mpath := joinField(path, "methods")
	for _, m := range a.GetMethods() {
		if !slices.Contains(b.GetMethods(), m) {
			d.add(Narrowed, mpath, m, "")
		}
	}
	for _, m := range b.GetMethods() {
		if !slices.Contains(a.GetMethods(), m) {
			d.add(Widened, mpath, "", m)
		}
	}
	d.secrets(joinField(path, "secrets"), a.GetSecrets(), b.GetSecrets())
}

// secrets compares secret injections, matched by header.
func (d *differ) secrets(path string, a, b []*contractualv1.SecretInjection) {
	byHeader := func(ss []*contractualv1.SecretInjection) map[string]*contractualv1.SecretInjection {
		m := make(map[string]*contractualv1.SecretInjection, len(ss))
		for _, s := range ss {
			m[s.GetHeader()] = s
		}
		return m
	}
	am, bm := byHeader(a), byHeader(b)
	for _, h := range sortedKeys(am, bm) {
		sa, sb := am[h], bm[h]
		hpath := path + "[" + h + "]"
		switch {
		case sa != nil && sb != nil && sa.GetName() == sb.GetName():
			d.text(joinField(hpath, "format"), sa.GetFormat(), sb.GetFormat())
			continue
		case sa != nil:
			d.add(Narrowed, hpath, secretSummary(sa), "")
		}
		if sb != nil {
			d.add(Widened, hpath, "", secretSummary(sb))
		}
	}
}

// config compares the static configuration. Config is data, not
// authority, so its changes are neutral.
func (d *differ) config(a, b map[string]string) {
	for _, k := range sortedKeys(a, b) {
		va, ina := a[k]
		vb, inb := b[k]
		switch {
		case !ina:
			d.add(Changed, joinKey("capabilities.config", k), "", strconv.Quote(vb))
		case !inb:
			d.add(Changed, joinKey("capabilities.config", k), strconv.Quote(va), "")
		case va != vb:
			d.add(Changed, joinKey("capabilities.config", k), strconv.Quote(va), strconv.Quote(vb))
		}
	}
}

// grants compares the log and WASI capabilities.
func (d *differ) grants(a, b *contractualv1.Capabilities) {
	d.grant("capabilities.log", a.GetLog() != nil, b.GetLog() != nil)
	d.grant("capabilities.wasi", a.GetWasi() != nil, b.GetWasi() != nil)
	d.grant("capabilities.wasi.clock", a.GetWasi().GetClock(), b.GetWasi().GetClock())
	d.grant("capabilities.wasi.random", a.GetWasi().GetRandom(), b.GetWasi().GetRandom())
}

// grant records a capability granted or revoked.
func (d *differ) grant(path string, a, b bool) {
	switch {
	case !a && b:
		d.add(Widened, path, "not granted", "granted")
	case a && !b:
		d.add(Narrowed, path, "granted", "not granted")
	}
}

// limits compares limits: higher is wider.
func (d *differ) limits(a, b *contractualv1.Limits) {
	if a == nil {
		a = &contractualv1.Limits{}
	}
	if b == nil {
		b = &contractualv1.Limits{}
	}
	for _, l := range limits {
		va, vb := l.get(a), l.get(b)
		if va == vb {
			continue
		}
		kind := Narrowed
		if vb > va {
			kind = Widened
		}
		d.add(kind, joinField("limits", string(l.name)), formatLimit(l.name, va), formatLimit(l.name, vb))
	}
}

// formatLimit renders a limit, with a round byte size spelled out:
// "65536 (64 KiB)".
func formatLimit(name protoreflect.Name, v uint64) string {
	s := strconv.FormatUint(v, 10)
	if !strings.HasSuffix(string(name), "_bytes") {
		return s
	}
	switch {
	case v >= mib && v%mib == 0:
		return s + " (" + strconv.FormatUint(v/mib, 10) + " MiB)"
	case v >= kib && v%kib == 0:
		return s + " (" + strconv.FormatUint(v/kib, 10) + " KiB)"
	}
	return s
}

// schema compares two JSON Schemas (nil if absent), down to the values
// that differ. Schema changes are neutral: they change what the tool
// accepts or returns, not what it may do.
func (d *differ) schema(path string, a, b *structpb.Struct) {
	switch {
	case a == nil && b == nil:
	case a == nil:
		d.add(Changed, path, "", jsonText(structpb.NewStructValue(b)))
	case b == nil:
		d.add(Changed, path, jsonText(structpb.NewStructValue(a)), "")
	default:
		d.json(path, structpb.NewStructValue(a), structpb.NewStructValue(b))
	}
}

// json compares two JSON values: objects key by key, lists of equal length
// element by element, anything else as a whole.
func (d *differ) json(path string, a, b *structpb.Value) {
	if proto.Equal(a, b) {
		return
	}
	sa, sb := a.GetStructValue(), b.GetStructValue()
	if sa != nil && sb != nil {
		for _, k := range sortedKeys(sa.GetFields(), sb.GetFields()) {
			va, ina := sa.GetFields()[k]
			vb, inb := sb.GetFields()[k]
			switch {
			case !ina:
				d.add(Changed, joinKey(path, k), "", jsonText(vb))
			case !inb:
				d.add(Changed, joinKey(path, k), jsonText(va), "")
			default:
				d.json(joinKey(path, k), va, vb)
			}
		}
		return
	}
	la, lb := a.GetListValue().GetValues(), b.GetListValue().GetValues()
	if a.GetListValue() != nil && b.GetListValue() != nil && len(la) == len(lb) {
		for i := range la {
			d.json(joinIndex(path, i), la[i], lb[i])
		}
		return
	}
	d.add(Changed, path, jsonText(a), jsonText(b))
}

// jsonText renders a JSON value compactly, with sorted keys.
func jsonText(v *structpb.Value) string {
	b, err := json.Marshal(v.AsInterface())
	if err != nil {
		return fmt.Sprint(v.AsInterface())
	}
	return string(b)
}

// sortedKeys returns the keys of a and b, sorted, each once.
func sortedKeys[V any](a, b map[string]V) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
