package job

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// Change and its kinds are the contract format's; contract.FormatDiff
// renders a job's changes too.
type Change = contract.Change

// Diff lists every difference between two versions of a job, each
// classified by what it does to the job's authority, for the owner deciding
// whether to approve new in place of old: a new step or tool, a removed or
// looser bound, a higher budget, more catch-up runs or retries widen; the
// reverse narrows; descriptions, triggers, pins, input templates and step
// order change. It compares the normal forms, so it reports no change
// exactly when the digests are equal. Steps are matched by id, bounds by
// tool and pointer. Old may be nil, for a first version.
func Diff(old, new *contractualv1.Job) []Change {
	a, b := normalized(old), normalized(new)
	var d differ
	d.text("name", a.GetName(), b.GetName())
	d.text("description", a.GetDescription(), b.GetDescription())
	d.text("trigger", triggerText(a.GetTrigger()), triggerText(b.GetTrigger()))
	d.steps(a.GetSteps(), b.GetSteps())
	d.bounds(a.GetBounds(), b.GetBounds())
	for _, f := range budgetFields {
		d.number("budgets."+f.name, f.get(a.GetBudgets()), f.get(b.GetBudgets()), false)
	}
	d.text("misfire", misfireText(a.GetMisfire()), misfireText(b.GetMisfire()))
	if ca, cb := catchUp(a.GetMisfire()), catchUp(b.GetMisfire()); ca != cb {
		d.add(kindOf(cb > ca), "misfire.max_catch_up", strconv.Itoa(ca), strconv.Itoa(cb))
	}
	d.number("retry.attempts", uint64(a.GetRetry().GetAttempts()), uint64(b.GetRetry().GetAttempts()), false)
	if x, y := a.GetRetry().GetBackoffSeconds(), b.GetRetry().GetBackoffSeconds(); x != y {
		d.add(contract.Changed, "retry.backoff_seconds", fmt.Sprint(x), fmt.Sprint(y))
	}
	if len(d) == 0 && !proto.Equal(a, b) {
		// Never claim there is no change when the digests differ.
		da, _ := Digest(a)
		db, _ := Digest(b)
		d.add(contract.Changed, "job", da, db)
	}
	return d
}

// normalized returns a normalized copy of j; for nil, an empty job with
// zero budgets.
func normalized(j *contractualv1.Job) *contractualv1.Job {
	if j == nil {
		return &contractualv1.Job{Budgets: &contractualv1.JobBudgets{}}
	}
	n := proto.CloneOf(j)
	Normalize(n)
	return n
}

// kindOf returns Widened if wider, else Narrowed.
func kindOf(wider bool) contract.ChangeKind {
	if wider {
		return contract.Widened
	}
	return contract.Narrowed
}

// differ collects Changes.
type differ []Change

func (d *differ) add(kind contract.ChangeKind, path, old, new string) {
	*d = append(*d, Change{Kind: kind, Path: path, Old: old, New: new})
}

// text records a neutral change of a rendered value.
func (d *differ) text(path, old, new string) {
	if old != new {
		d.add(contract.Changed, path, quote(old), quote(new))
	}
}

// number records a change of a number: up widens unless lowerWider.
func (d *differ) number(path string, old, new uint64, lowerWider bool) {
	if old != new {
		d.add(kindOf((new > old) != lowerWider), path, numText(old), numText(new))
	}
}

func numText(v uint64) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatUint(v, 10)
}

func quote(s string) string {
	if s == "" {
		return ""
	}
	return strconv.Quote(s)
}

// triggerText renders a trigger on one line.
func triggerText(t *contractualv1.Trigger) string {
	switch {
	case t.GetCron() != nil:
		return fmt.Sprintf("cron %s in %s", t.GetCron().GetExpression(), t.GetCron().GetTimeZone())
	case t.GetOnce() != nil:
		return "once at " + t.GetOnce().GetAt()
	case t.GetWebhook() != nil:
		return fmt.Sprintf("webhook signed with %s, replay window %ds", t.GetWebhook().GetSecret(), t.GetWebhook().GetReplayWindowSeconds())
	}
	return ""
}

func misfireText(m *contractualv1.Misfire) string {
	if m.GetPolicy() == contractualv1.MisfirePolicy_MISFIRE_POLICY_CATCH_UP {
		return "catch_up"
	}
	return "skip"
}

func catchUp(m *contractualv1.Misfire) int { return int(m.GetMaxCatchUp()) }

// steps compares steps by id.
func (d *differ) steps(a, b []*contractualv1.JobStep) {
	ids := func(ss []*contractualv1.JobStep) (map[string]*contractualv1.JobStep, []string) {
		m := make(map[string]*contractualv1.JobStep, len(ss))
		var order []string
		for _, s := range ss {
			m[s.GetId()] = s
			order = append(order, s.GetId())
		}
		return m, order
	}
	am, aorder := ids(a)
	bm, border := ids(b)
	for _, id := range aorder {
		if _, ok := bm[id]; !ok {
			d.add(contract.Narrowed, "steps["+id+"]", stepText(am[id]), "")
		}
	}
	var kept []string
	for _, id := range border {
		path := "steps[" + id + "]"
		x, ok := am[id]
		y := bm[id]
		if !ok {
			d.add(contract.Widened, path, "", stepText(y))
			continue
		}
		kept = append(kept, id)
		if IsAgent(x) || IsAgent(y) {
			d.agent(path, x, y)
			continue
		}
		if x.GetTool() != y.GetTool() {
			d.add(contract.Widened, path+".tool", x.GetTool(), y.GetTool())
		}
		d.text(path+".contract", x.GetContract(), y.GetContract())
		d.text(path+".input", jsonText(x.GetInput()), jsonText(y.GetInput()))
	}
	if old := slices.DeleteFunc(slices.Clone(aorder), func(id string) bool { _, ok := bm[id]; return !ok }); !slices.Equal(old, kept) {
		d.add(contract.Changed, "steps", "order "+strings.Join(old, ", "), "order "+strings.Join(kept, ", "))
	}
}

func stepText(s *contractualv1.JobStep) string {
	if a := s.GetAgent(); a != nil {
		var tools []string
		for _, t := range a.GetTools() {
			tools = append(tools, fmt.Sprintf("%s (%s)", t.GetTool(), t.GetContract()))
		}
		return fmt.Sprintf("agent %q with %s", a.GetPrompt(), strings.Join(tools, ", "))
	}
	return fmt.Sprintf("%s (%s)", s.GetTool(), s.GetContract())
}

// agent compares two versions of a step of which at least one is an agent
// step. A tool step becoming an agent step, or the reverse, widens: it
// is another kind of authority.
func (d *differ) agent(path string, x, y *contractualv1.JobStep) {
	if IsAgent(x) != IsAgent(y) {
		d.add(contract.Widened, path, stepText(x), stepText(y))
		return
	}
	a, b := x.GetAgent(), y.GetAgent()
	d.text(path+".agent.prompt", a.GetPrompt(), b.GetPrompt())
	pins := func(ts []*contractualv1.AgentTool) map[string]string {
		m := make(map[string]string, len(ts))
		for _, t := range ts {
			m[t.GetTool()] = t.GetContract()
		}
		return m
	}
	am, bm := pins(a.GetTools()), pins(b.GetTools())
	for _, t := range a.GetTools() {
		if _, ok := bm[t.GetTool()]; !ok {
			d.add(contract.Narrowed, path+".agent.tools["+t.GetTool()+"]", t.GetContract(), "")
		}
	}
	for _, t := range b.GetTools() {
		tpath := path + ".agent.tools[" + t.GetTool() + "]"
		switch old, ok := am[t.GetTool()]; {
		case !ok:
			d.add(contract.Widened, tpath, "", t.GetContract())
		case old != t.GetContract():
			d.add(contract.Changed, tpath+".contract", old, t.GetContract())
		}
	}
	d.number(path+".agent.max_model_requests", uint64(a.GetMaxModelRequests()), uint64(b.GetMaxModelRequests()), false)
	d.text(path+".input", inputText(x), inputText(y))
}

// inputText is a step's input template as JSON, or "" if it has none.
func inputText(s *contractualv1.JobStep) string {
	if s.GetInput().GetKind() == nil {
		return ""
	}
	return jsonText(s.GetInput())
}

// bounds compares bounds by tool and pointer. A bound removed widens.
func (d *differ) bounds(a, b []*contractualv1.ToolBounds) {
	flat := func(bs []*contractualv1.ToolBounds) (map[string]*contractualv1.InputBound, []string) {
		m := make(map[string]*contractualv1.InputBound)
		var keys []string
		for _, tb := range bs {
			for _, in := range tb.GetInputs() {
				k := "bounds[" + tb.GetTool() + "][" + strconv.Quote(in.GetPointer()) + "]"
				m[k] = in
				keys = append(keys, k)
			}
		}
		return m, keys
	}
	am, akeys := flat(a)
	bm, bkeys := flat(b)
	for _, k := range akeys {
		if _, ok := bm[k]; !ok {
			d.add(contract.Widened, k, boundText(am[k]), "")
		}
	}
	for _, k := range bkeys {
		x, ok := am[k]
		if !ok {
			d.add(contract.Narrowed, k, "", boundText(bm[k]))
			continue
		}
		d.bound(k, x, bm[k])
	}
}

// bound compares two bounds on the same place.
func (d *differ) bound(path string, x, y *contractualv1.InputBound) {
	xs, ys := allowedSet(x), allowedSet(y)
	switch {
	case slices.Equal(xs, ys):
	case len(ys) == 0:
		d.add(contract.Widened, path+".allowed", strings.Join(xs, ", "), "any value")
	case len(xs) == 0:
		d.add(contract.Narrowed, path+".allowed", "any value", strings.Join(ys, ", "))
	default:
		for _, v := range ys {
			if !slices.Contains(xs, v) {
				d.add(contract.Widened, path+".allowed", "", v)
			}
		}
		for _, v := range xs {
			if !slices.Contains(ys, v) {
				d.add(contract.Narrowed, path+".allowed", v, "")
			}
		}
	}
	switch p, q := x.GetPattern(), y.GetPattern(); {
	case p == q:
	case p == "":
		d.add(contract.Narrowed, path+".pattern", "", strconv.Quote(q))
	case q == "":
		d.add(contract.Widened, path+".pattern", strconv.Quote(p), "")
	default:
		d.add(contract.Changed, path+".pattern", strconv.Quote(p), strconv.Quote(q))
	}
	d.limit(path+".minimum", x.Minimum, y.Minimum, true)
	d.limit(path+".maximum", x.Maximum, y.Maximum, false)
	var xl, yl *float64
	if x.MaxLength != nil {
		v := float64(x.GetMaxLength())
		xl = &v
	}
	if y.MaxLength != nil {
		v := float64(y.GetMaxLength())
		yl = &v
	}
	d.limit(path+".max_length", xl, yl, false)
}

// limit compares an optional limit: removing it widens, adding it narrows,
// and moving it widens when it lets more through (down for a minimum).
func (d *differ) limit(path string, x, y *float64, isMin bool) {
	switch {
	case x == nil && y == nil:
	case y == nil:
		d.add(contract.Widened, path, floatText(*x), "")
	case x == nil:
		d.add(contract.Narrowed, path, "", floatText(*y))
	case *x != *y:
		d.add(kindOf((*y < *x) == isMin), path, floatText(*x), floatText(*y))
	}
}

func floatText(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func allowedSet(in *contractualv1.InputBound) []string {
	var s []string
	for _, v := range in.GetAllowed() {
		s = append(s, jsonText(v))
	}
	return s
}

// boundText renders a bound's checks on one line, as the card does.
func boundText(in *contractualv1.InputBound) string {
	return strings.Join(boundWords(in), "; ")
}
