package policy

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/job"
	"github.com/contractual/contractual/internal/errs"
)

// runIDRE is what a run id looks like (the worker's ids are hex digests).
var runIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// evaluateJob is Evaluate for a job's call (principal "job:<id>", with the
// run it belongs to), and refuses a run_id for any other principal. On top
// of the contract's answer (evaluate), it allows the call only if the
// job's approved version is not paused, calls the tool in one of its
// steps (a tool step's tool, or a tool an agent step lists), pins the approved contract of the tool's name, the input is
// inside the job's bounds for the tool, the run has made no more calls
// than tool_calls_per_run, and the run is within the job's runs_per_day
// (runs counted by the UTC day of their first call, on policy's clock). A
// high-risk tool's call is APPROVAL_REQUIRED: a job never waits for a
// one-shot approval. A step, if the request names one, must be a step of
// the job calling the tool; the decision carries it, for the call's
// idempotency key (decision.ActionKey).
//
// Any answer other than allow — a deny, approval required, or a refusal
// of the call — pauses the job (kind decision, with the run and the
// steps calling the tool), in the same transaction that counts the call,
// recorded in the audit log with the decision; the answer says that the
// job is paused. A call of a job that is paused, or has no approved
// version, is refused (errs.FailedPrecondition) and changes nothing.
//
// Job calls run under s.mu, one at a time, like every change of jobs and
// contracts: the budgets' counts, the pause and the pins checked against
// the approved contracts cannot interleave with another change.
func (s *Service) evaluateJob(ctx context.Context, req *contractualv1.EvaluateRequest) (*contractualv1.EvaluateResponse, error) {
	c := &call{tool: req.GetTool(), who: req.GetPrincipal()}
	id, isJob := strings.CutPrefix(c.who, "job:")
	runID, step := req.GetRunId(), req.GetStep()
	var err error
	switch {
	case !isJob && runID == "":
		err = errs.E(errs.Invalid, "step is only for a job's calls (principal job:<id>), not for %s", clip(c.who, 100))
	case !isJob:
		err = errs.E(errs.Invalid, "run_id is only for a job's calls (principal job:<id>), not for %s", clip(c.who, 100))
	case runID == "":
		err = errs.E(errs.Invalid, "run_id is required for a job's call: the run it belongs to")
	case !runIDRE.MatchString(runID):
		err = errs.E(errs.Invalid, "run_id %q is malformed: letters, digits, '.', '_', ':' and '-', at most 128", clip(runID, 100))
	case step != "" && !runIDRE.MatchString(step):
		err = errs.E(errs.Invalid, "step %q is malformed", clip(step, 100))
	}
	if err != nil {
		return nil, s.auditRefusal(ctx, refusedEvent(ctx, c), err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	ctx = context.WithoutCancel(ctx) // a decision that pauses is recorded and committed together
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	rec, err := liveJob(ctx, tx, id)
	switch {
	case err != nil:
		return nil, err
	case rec == nil:
		err = errs.E(errs.FailedPrecondition, "job %s has no approved version: no call of it is allowed", clip(id, 100))
	case rec.GetState() == jobPaused:
		err = errs.E(errs.FailedPrecondition, "job %s is paused (%s, by %s): %s; no call of it is allowed until it is resumed",
			id, pauseKindName(rec.GetPause().GetKind()), rec.GetPause().GetPausedBy(), rec.GetPause().GetReason())
	}
	if err != nil {
		return nil, s.auditRefusal(ctx, refusedEvent(ctx, c), err)
	}

	d, err := s.evaluate(ctx, c, req.GetInput())
	if errs.Is(err, errs.Unavailable) || errs.Is(err, errs.Internal) {
		return nil, err
	}
	// The steps that may call the tool: tool steps calling it, and agent
	// steps listing it.
	var steps []string
	for _, jc := range job.Calls(rec.GetJob()) {
		if jc.Tool == c.tool && !slices.Contains(steps, jc.Step) {
			steps = append(steps, jc.Step)
		}
	}
	if err == nil && step != "" && !slices.Contains(steps, step) {
		err = errs.E(errs.Invalid, "job %s has no step %q calling %s", id, clip(step, 100), c.tool)
	}
	if err == nil {
		if err = s.judge(ctx, tx, rec, c, d, runID, steps); err != nil && (errs.Is(err, errs.Unavailable) || errs.Is(err, errs.Internal)) {
			return nil, err
		}
	}
	var (
		evs   []*contractualv1.AuditEvent
		after *contractualv1.JobRecord
	)
	if err != nil || d.GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW {
		why := fmt.Sprintf("policy refused a call of %s: %v", clip(c.tool, 200), err)
		if err == nil {
			why = fmt.Sprintf("policy answered %s to a call of %s: %s", verdictOutcome(d.GetVerdict()), c.tool, d.GetReason())
			d.Reason += fmt.Sprintf("; job %s is paused", id)
		} else {
			err = errs.E(errs.KindOf(err), "%v; job %s is paused", err, id)
		}
		pausedAt := strings.Join(steps, ",")
		if step != "" {
			pausedAt = step
		}
		after = paused(rec, &contractualv1.JobPause{
			Kind: contractualv1.PauseKind_PAUSE_KIND_DECISION, Reason: why, PausedBy: c.who,
			PausedAt: timestamppb.New(s.opts.Now()), RunId: runID, Step: pausedAt,
		})
		if uerr := updateJob(ctx, tx, after, jobApproved); uerr != nil {
			return nil, uerr
		}
		evs = append(evs, pauseEvent(after))
	}
	var resp *contractualv1.EvaluateResponse
	if err != nil {
		ev := refusedEvent(ctx, c)
		ev.Outcome, ev.Detail = outcomeOf(err), clip(err.Error(), maxDetailBytes)
		evs = append([]*contractualv1.AuditEvent{ev}, evs...)
	} else {
		d.RunId, d.Step = runID, step
		signed, serr := s.signer.Sign(d)
		if serr != nil {
			return nil, errs.Wrap(errs.Internal, serr, "policy: signing decision %s", d.GetId())
		}
		evs = append([]*contractualv1.AuditEvent{decisionEvent(d)}, evs...)
		resp = &contractualv1.EvaluateResponse{Decision: d, Signed: signed, CanonicalInput: c.canonical}
	}
	if aerr := s.audit(ctx, evs...); aerr != nil {
		return nil, aerr
	}
	if cerr := s.commit(ctx, tx, evs...); cerr != nil {
		return nil, cerr
	}
	if after != nil {
		s.jobs.publish(after)
	}
	return resp, err
}

// judge applies the job's own checks to d, the contract's decision of c,
// changing its verdict and reason; on allow it counts the call against the
// run's budgets. steps are the job's steps that call c.tool.
func (s *Service) judge(ctx context.Context, tx *sql.Tx, rec *contractualv1.JobRecord, c *call, d *contractualv1.Decision, runID string, steps []string) error {
	j, id := rec.GetJob(), rec.GetId()
	deny := func(format string, args ...any) error {
		d.Verdict, d.Reason = contractualv1.Verdict_VERDICT_DENY, fmt.Sprintf(format, args...)
		return nil
	}
	jcs := job.Calls(j)
	if len(steps) == 0 {
		var tools []string
		for _, jc := range jcs {
			if !slices.Contains(tools, jc.Tool) {
				tools = append(tools, jc.Tool)
			}
		}
		return deny("job %s does not call %s: its steps call %s", id, c.tool, strings.Join(tools, ", "))
	}
	if d.GetVerdict() == contractualv1.Verdict_VERDICT_DENY {
		return deny("job %s calls %s under a contract that is not approved: %s", id, c.tool, d.GetReason())
	}
	var pins []string
	for _, jc := range jcs {
		if jc.Tool == c.tool && !slices.Contains(pins, jc.Contract) {
			pins = append(pins, jc.Contract)
		}
	}
	if !slices.Contains(pins, d.GetContractDigest()) {
		return deny("job %s pins contract %s %s, but the approved %s is %s", id, c.name, strings.Join(pins, ", "), c.name, d.GetContractDigest())
	}
	for _, tb := range j.GetBounds() {
		if tb.GetTool() != c.tool {
			continue
		}
		if why := checkBounds(tb.GetInputs(), c.canonical); why != "" {
			return deny("the input of %s is outside job %s's bounds: %s", c.tool, id, why)
		}
	}
	if d.GetVerdict() == contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED {
		d.Reason = fmt.Sprintf("%s is a high-risk tool: each call needs the owner's one-shot approval, and a job never waits for one", c.tool)
		return nil
	}
	now := s.opts.Now().UTC()
	day := now.Format("2006-01-02")
	calls, first, err := countCall(ctx, tx, id, runID, day)
	if err != nil {
		return err
	}
	b := j.GetBudgets()
	if lim := int64(b.GetToolCallsPerRun()); calls > lim {
		return deny("run %s of job %s made its call %d: its budget is %d tool calls per run", runID, id, calls, lim)
	}
	if first {
		runs, err := runsOn(ctx, tx, id, day)
		if err != nil {
			return err
		}
		if lim := int64(b.GetRunsPerDay()); runs > lim {
			return deny("run %s would be job %s's run %d on %s (UTC): its budget is %d runs per day", runID, id, runs, day, lim)
		}
	}
	d.Reason = fmt.Sprintf("job %s %s, approved by %s, may call %s within its bounds (run %s, call %d of at most %d); %s",
		id, rec.GetDigest(), rec.GetDecidedBy(), c.tool, runID, calls, b.GetToolCallsPerRun(), d.GetReason())
	return nil
}

// checkBounds checks a canonical input against a tool's bounds and says
// what is outside them, or "".
func checkBounds(bounds []*contractualv1.InputBound, canonical []byte) string {
	var input any
	if err := json.Unmarshal(canonical, &input); err != nil {
		return "the input is not JSON"
	}
	for _, in := range bounds {
		at := in.GetPointer()
		if at == "" {
			at = "the whole input"
		}
		v, ok := resolve(input, in.GetPointer())
		if !ok {
			return at + " is missing"
		}
		if why := checkBound(in, v); why != "" {
			return at + " " + why
		}
	}
	return ""
}

// checkBound checks one value against one bound.
func checkBound(in *contractualv1.InputBound, v any) string {
	if len(in.GetAllowed()) > 0 {
		got := jsonOf(v)
		ok := false
		var want []string
		for _, a := range in.GetAllowed() {
			w := jsonOf(a.AsInterface())
			want = append(want, w)
			ok = ok || w == got
		}
		if !ok {
			return fmt.Sprintf("is %s, not one of %s", clip(got, 200), strings.Join(want, ", "))
		}
	}
	if p := in.GetPattern(); p != "" {
		str, isStr := v.(string)
		re, err := regexp.Compile(`^(?:` + p + `)$`)
		switch {
		case !isStr:
			return fmt.Sprintf("is %s, not a string matching %q", clip(jsonOf(v), 200), p)
		case err != nil:
			return fmt.Sprintf("cannot be checked: pattern %q does not compile", p)
		case !re.MatchString(str):
			return fmt.Sprintf("is %s, which does not match %q as a whole", clip(jsonOf(v), 200), p)
		}
	}
	if in.Minimum != nil || in.Maximum != nil {
		f, isNum := v.(float64)
		switch {
		case !isNum:
			return fmt.Sprintf("is %s, not a number", clip(jsonOf(v), 200))
		case in.Minimum != nil && f < in.GetMinimum():
			return fmt.Sprintf("is %s, below the minimum %s", jsonOf(v), strconv.FormatFloat(in.GetMinimum(), 'g', -1, 64))
		case in.Maximum != nil && f > in.GetMaximum():
			return fmt.Sprintf("is %s, above the maximum %s", jsonOf(v), strconv.FormatFloat(in.GetMaximum(), 'g', -1, 64))
		}
	}
	if in.MaxLength != nil {
		var n int
		switch x := v.(type) {
		case string:
			n = utf8.RuneCountInString(x)
		case []any:
			n = len(x)
		default:
			return fmt.Sprintf("is %s, not a string or an array", clip(jsonOf(v), 200))
		}
		if uint64(n) > in.GetMaxLength() {
			return fmt.Sprintf("has %d characters or elements, over the %d allowed", n, in.GetMaxLength())
		}
	}
	return ""
}

// jsonOf is v as compact JSON with sorted keys, for comparing values and
// for messages.
func jsonOf(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "?"
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// pointerTokens splits a JSON Pointer (RFC 6901) into its unescaped
// reference tokens; "" has none.
func pointerTokens(p string) []string {
	if p == "" {
		return nil
	}
	toks := strings.Split(p[1:], "/")
	for i, t := range toks {
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks
}

// resolve returns the value at pointer p in v.
func resolve(v any, p string) (any, bool) {
	for _, tok := range pointerTokens(p) {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[tok]; !ok {
				return nil, false
			}
		case []any:
			i, ok := arrayIndex(tok)
			if !ok || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// arrayIndex parses an RFC 6901 array index: "0", or digits without a
// leading zero.
func arrayIndex(tok string) (int, bool) {
	if tok == "" || len(tok) > 1 && tok[0] == '0' {
		return 0, false
	}
	i, err := strconv.Atoi(tok)
	return i, err == nil && i >= 0 && i < math.MaxInt32
}

// boundAgainstSchema checks that a bound can hold against a tool's input
// schema, as far as the schema tells: the place it points to is one the
// schema allows (through properties and items; a property not listed
// where additionalProperties is false cannot exist), and its checks fit
// the type the schema gives it there (a pattern a string, a minimum or
// maximum a number, max_length a string or an array). It returns what is
// wrong, or "".
func boundAgainstSchema(schema map[string]any, in *contractualv1.InputBound) string {
	node := schema
	for _, tok := range pointerTokens(in.GetPointer()) {
		if node == nil {
			return ""
		}
		props, _ := node["properties"].(map[string]any)
		if p, ok := props[tok].(map[string]any); ok {
			node = p
			continue
		}
		if items, ok := node["items"].(map[string]any); ok {
			if _, isIndex := arrayIndex(tok); isIndex {
				node = items
				continue
			}
		}
		if extra, ok := node["additionalProperties"].(bool); ok && !extra && props != nil {
			return fmt.Sprintf("pointer %q names %q, which the tool's input schema does not allow (its properties are %s)",
				in.GetPointer(), tok, strings.Join(sortedNames(props), ", "))
		}
		node = nil
	}
	if node == nil {
		return ""
	}
	var types []string
	switch t := node["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			if s, ok := x.(string); ok {
				types = append(types, s)
			}
		}
	}
	if len(types) == 0 {
		return ""
	}
	fits := func(want ...string) bool {
		return slices.ContainsFunc(types, func(t string) bool { return slices.Contains(want, t) })
	}
	switch {
	case in.GetPattern() != "" && !fits("string"):
		return fmt.Sprintf("pointer %q: a pattern bounds a string, and the tool's input schema makes it %s", in.GetPointer(), strings.Join(types, " or "))
	case (in.Minimum != nil || in.Maximum != nil) && !fits("number", "integer"):
		return fmt.Sprintf("pointer %q: a minimum or maximum bounds a number, and the tool's input schema makes it %s", in.GetPointer(), strings.Join(types, " or "))
	case in.MaxLength != nil && !fits("string", "array"):
		return fmt.Sprintf("pointer %q: max_length bounds a string or an array, and the tool's input schema makes it %s", in.GetPointer(), strings.Join(types, " or "))
	}
	return ""
}

// sortedNames returns m's keys, sorted.
func sortedNames(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
