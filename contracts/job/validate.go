package job

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
	_ "time/tzdata" // zones are checked against the embedded database
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/secret"
)

// Bounds on the sizes of a job's parts, generous for any real job and small
// enough for a human to review.
const (
	maxSteps       = 64
	maxBounds      = 256
	maxAllowed     = 256
	maxPattern     = 1024
	maxPointer     = 1024
	maxDescription = 4 << 10
	maxCatchUp     = 100
	maxAttempts    = 10
)

var (
	nameRE   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	stepIDRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	// toolRE is "<contract name>.<export>", each by the contract format's
	// rules.
	toolRE   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}\.[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	// cronFieldRE is the characters of one cron field: numbers, names
	// (JAN, MON), '*', ',', '-' and '/'. What they mean is the scheduler's.
	cronFieldRE = regexp.MustCompile(`^[0-9A-Za-z*,/-]{1,64}$`)
)

// cronMacros are the cron macros, each mapped to its normal spelling.
var cronMacros = map[string]string{
	"@yearly": "@yearly", "@annually": "@yearly", "@monthly": "@monthly",
	"@weekly": "@weekly", "@daily": "@daily", "@midnight": "@daily", "@hourly": "@hourly",
}

// Validate checks every rule of the job format (see the field docs in
// job.proto) and returns all the problems found, as an errs.Invalid error
// wrapping a *ValidationError, or nil. It accepts a job before or after
// Normalize. To have problems placed in a file, use File.Validate.
func Validate(j *contractualv1.Job) error {
	return invalid(validate(j))
}

// problems collects Problems.
type problems []Problem

func (ps *problems) addf(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// required records a problem if s is empty and reports whether it is not.
func (ps *problems) required(path, s string) bool {
	if s == "" {
		ps.addf(path, "required")
	}
	return s != ""
}

// validate returns the problems with j, in field order.
func validate(j *contractualv1.Job) []Problem {
	var ps problems
	if j == nil {
		ps.addf("", "job is missing")
		return ps
	}
	if ps.required("name", j.GetName()) && !nameRE.MatchString(j.GetName()) {
		ps.addf("name", "%q: use lowercase letters, digits and dashes, starting with a letter, at most 63", j.GetName())
	}
	if d := j.GetDescription(); !utf8.ValidString(d) || len(d) > maxDescription {
		ps.addf("description", "must be UTF-8 text of at most %d bytes", maxDescription)
	}
	ps.trigger(j.GetTrigger())
	ps.steps(j.GetSteps())
	ps.bounds(j.GetBounds(), j.GetSteps())
	ps.budgets(j.GetBudgets(), toolSteps(j.GetSteps()))
	ps.misfire(j.GetMisfire(), j.GetTrigger())
	ps.retry(j.GetRetry())
	if len(ps) == 0 {
		if _, err := proto.Marshal(j); err != nil {
			ps.addf("", "cannot be encoded: %v", err)
		}
	}
	return ps
}

// trigger checks that exactly one trigger is set, and that one.
func (ps *problems) trigger(t *contractualv1.Trigger) {
	n := 0
	if c := t.GetCron(); c != nil {
		n++
		if ps.required("trigger.cron.expression", c.GetExpression()) {
			if err := checkCron(c.GetExpression()); err != nil {
				ps.addf("trigger.cron.expression", "%q: %v", c.GetExpression(), err)
			}
		}
		if ps.required("trigger.cron.time_zone", c.GetTimeZone()) {
			if err := checkZone(c.GetTimeZone()); err != nil {
				ps.addf("trigger.cron.time_zone", "%v", err)
			}
		}
	}
	if o := t.GetOnce(); o != nil {
		n++
		if ps.required("trigger.once.at", o.GetAt()) {
			if _, err := time.Parse(time.RFC3339, o.GetAt()); err != nil {
				ps.addf("trigger.once.at", "%q is not an RFC 3339 time with an offset, like 2026-12-24T18:00:00+01:00", o.GetAt())
			}
		}
	}
	if w := t.GetWebhook(); w != nil {
		n++
		if ps.required("trigger.webhook.secret", w.GetSecret()) && !secret.ValidName(w.GetSecret()) {
			ps.addf("trigger.webhook.secret", "%q is not a secret name: an uppercase letter, then uppercase letters, digits or _, at most 64", w.GetSecret())
		}
		if r := w.GetReplayWindowSeconds(); r > 3600 {
			ps.addf("trigger.webhook.replay_window_seconds", "%d is out of range 1..3600", r)
		}
	}
	switch {
	case t == nil:
		ps.addf("trigger", "required")
	case n == 0:
		ps.addf("trigger", "set one of cron, once or webhook")
	case n > 1:
		ps.addf("trigger", "set only one of cron, once or webhook")
	}
}

// checkCron checks the shape of a cron expression: a macro, or five fields
// of cron characters. The scheduler parses it for real.
func checkCron(expr string) error {
	if strings.HasPrefix(expr, "@") {
		if _, ok := cronMacros[expr]; !ok {
			return fmt.Errorf("unknown macro; use @yearly, @monthly, @weekly, @daily or @hourly")
		}
		return nil
	}
	fields := strings.Fields(expr)
	if len(fields) != 5 {
		return fmt.Errorf("has %d fields; want 5 (minute hour day-of-month month day-of-week) or a macro like @daily", len(fields))
	}
	for i, f := range fields {
		if !cronFieldRE.MatchString(f) {
			return fmt.Errorf("field %d (%s) has characters cron does not use", i+1, f)
		}
	}
	return nil
}

// checkZone checks that zone names an IANA time zone. "Local" is refused:
// it means whatever the server's zone is.
func checkZone(zone string) error {
	if zone == "Local" {
		return fmt.Errorf(`"Local" is the server's zone, not a fixed one: name the zone, e.g. "Europe/Berlin" or "UTC"`)
	}
	if _, err := time.LoadLocation(zone); err != nil {
		return fmt.Errorf("%q is not an IANA time zone (like Europe/Berlin or UTC)", zone)
	}
	return nil
}

// steps checks the steps and the references of their inputs.
func (ps *problems) steps(steps []*contractualv1.JobStep) {
	switch {
	case len(steps) == 0:
		ps.addf("steps", "at least one step is required")
	case len(steps) > maxSteps:
		ps.addf("steps", "%d steps; at most %d", len(steps), maxSteps)
	}
	seen := make(map[string]int) // step id → index
	for i, s := range steps {
		path := fmt.Sprintf("steps[%d]", i)
		if ps.required(path+".id", s.GetId()) {
			if !stepIDRE.MatchString(s.GetId()) {
				ps.addf(path+".id", "%q: use a lowercase letter, then lowercase letters, digits or _, at most 63", s.GetId())
			} else if first, ok := seen[s.GetId()]; ok {
				ps.addf(path+".id", "%q is already the id of steps[%d]", s.GetId(), first)
			}
		}
		switch {
		case IsAgent(s):
			ps.agentStep(path, s)
		case s.GetTool() == "" && s.GetContract() == "" && s.GetInput().GetKind() == nil:
			ps.addf(path, "set tool, contract and input (a tool step) or agent (an agent step)")
		default:
			if ps.required(path+".tool", s.GetTool()) && !toolRE.MatchString(s.GetTool()) {
				ps.addf(path+".tool", `%q: name a tool as "<contract name>.<export>", e.g. "ghstars.repo_stars"`, s.GetTool())
			}
			if ps.required(path+".contract", s.GetContract()) && !digestRE.MatchString(s.GetContract()) {
				ps.addf(path+".contract", `must be the tool contract's digest: "sha256:" and 64 lowercase hex digits`)
			}
		}
		switch {
		case s.GetInput().GetKind() == nil && (IsAgent(s) || s.GetTool() == "" && s.GetContract() == ""):
			// An agent step's data is optional; a step with nothing set
			// is one problem.
		case s.GetInput().GetKind() == nil:
			ps.addf(path+".input", "required: write {} for a tool that takes no input")
		default:
			refs(s.GetInput(), path+".input", func(rpath string, r Ref) {
				if _, ok := seen[r.Step]; r.Step != "" && !ok {
					ps.addf(rpath, "%q: no earlier step has id %q", r.String(), r.Step)
				}
			}, func(p, msg string) { ps.addf(p, "%s", msg) })
		}
		if _, ok := seen[s.GetId()]; !ok {
			seen[s.GetId()] = i
		}
	}
}

// bounds checks the bounds of each tool.
func (ps *problems) bounds(bounds []*contractualv1.ToolBounds, steps []*contractualv1.JobStep) {
	if len(bounds) > maxBounds {
		ps.addf("bounds", "%d entries; at most %d", len(bounds), maxBounds)
	}
	called := make(map[string]bool)
	for i, s := range steps {
		for _, c := range StepCalls(i, s) {
			called[c.Tool] = true
		}
	}
	seen := make(map[string]int)
	for i, b := range bounds {
		path := fmt.Sprintf("bounds[%d]", i)
		if ps.required(path+".tool", b.GetTool()) {
			if first, ok := seen[b.GetTool()]; ok {
				ps.addf(path+".tool", "%q already has bounds at bounds[%d]; merge them", b.GetTool(), first)
			} else if !called[b.GetTool()] {
				ps.addf(path+".tool", "%q is not called by any step (nor listed by an agent step)", b.GetTool())
			}
			seen[b.GetTool()] = i
		}
		if len(b.GetInputs()) == 0 {
			ps.addf(path+".inputs", "at least one bound is required")
		}
		pointers := make(map[string]int)
		for k, in := range b.GetInputs() {
			ipath := fmt.Sprintf("%s.inputs[%d]", path, k)
			if first, ok := pointers[in.GetPointer()]; ok {
				ps.addf(ipath+".pointer", "%q is already bounded at inputs[%d]; merge them", in.GetPointer(), first)
			}
			pointers[in.GetPointer()] = k
			ps.inputBound(ipath, in)
		}
	}
}

// inputBound checks one bound.
func (ps *problems) inputBound(path string, in *contractualv1.InputBound) {
	if err := checkPointer(in.GetPointer()); err != nil {
		ps.addf(path+".pointer", "%q: %v", in.GetPointer(), err)
	}
	if len(in.GetAllowed()) > maxAllowed {
		ps.addf(path+".allowed", "%d values; at most %d", len(in.GetAllowed()), maxAllowed)
	}
	if p := in.GetPattern(); p != "" {
		if len(p) > maxPattern {
			ps.addf(path+".pattern", "%d bytes; at most %d", len(p), maxPattern)
		} else if _, err := compilePattern(p); err != nil {
			ps.addf(path+".pattern", "not an RE2 regular expression: %v", err)
		}
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{{"minimum", in.Minimum}, {"maximum", in.Maximum}} {
		if f.v != nil && (math.IsNaN(*f.v) || math.IsInf(*f.v, 0)) {
			ps.addf(path+"."+f.name, "must be a finite number")
		}
	}
	numeric := in.Minimum != nil || in.Maximum != nil
	switch {
	case in.Minimum != nil && in.Maximum != nil && in.GetMinimum() > in.GetMaximum():
		ps.addf(path+".maximum", "%v is below the minimum %v: no value could pass", in.GetMaximum(), in.GetMinimum())
	case numeric && in.GetPattern() != "":
		ps.addf(path+".pattern", "a pattern holds strings and minimum/maximum numbers: no value could pass both")
	case numeric && in.MaxLength != nil:
		ps.addf(path+".max_length", "max_length holds strings and arrays and minimum/maximum numbers: no value could pass both")
	}
}

// compilePattern compiles an InputBound pattern, anchored.
func compilePattern(p string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + p + `)$`)
}

// checkPointer checks JSON Pointer syntax (RFC 6901).
func checkPointer(p string) error {
	switch {
	case len(p) > maxPointer:
		return fmt.Errorf("longer than %d bytes", maxPointer)
	case !utf8.ValidString(p):
		return fmt.Errorf("not UTF-8")
	case p != "" && p[0] != '/':
		return fmt.Errorf(`a JSON pointer is "" or starts with "/"`)
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '~' && (i+1 == len(p) || p[i+1] != '0' && p[i+1] != '1') {
			return fmt.Errorf(`"~" must be followed by 0 or 1 (~0 is "~", ~1 is "/")`)
		}
	}
	return nil
}

// budget is one field of JobBudgets, with its range and default.
type budget struct {
	name     string
	get      func(*contractualv1.JobBudgets) uint64
	set      func(*contractualv1.JobBudgets, uint64)
	max, def uint64
	unit     string
}

// budgetFields lists the budgets; tool_calls_per_run defaults to the number
// of steps, see Normalize.
var budgetFields = []budget{
	{"tool_calls_per_run", func(b *contractualv1.JobBudgets) uint64 { return uint64(b.GetToolCallsPerRun()) },
		func(b *contractualv1.JobBudgets, v uint64) { b.ToolCallsPerRun = uint32(v) }, 1000, 0, "calls"},
	{"run_time_seconds", func(b *contractualv1.JobBudgets) uint64 { return uint64(b.GetRunTimeSeconds()) },
		func(b *contractualv1.JobBudgets, v uint64) { b.RunTimeSeconds = uint32(v) }, 86400, 300, "s"},
	{"egress_requests", func(b *contractualv1.JobBudgets) uint64 { return uint64(b.GetEgressRequests()) },
		func(b *contractualv1.JobBudgets, v uint64) { b.EgressRequests = uint32(v) }, 100000, 64, "requests"},
	{"egress_bytes", func(b *contractualv1.JobBudgets) uint64 { return b.GetEgressBytes() },
		func(b *contractualv1.JobBudgets, v uint64) { b.EgressBytes = v }, 1 << 30, 16 << 20, "bytes"},
	{"output_bytes", func(b *contractualv1.JobBudgets) uint64 { return b.GetOutputBytes() },
		func(b *contractualv1.JobBudgets, v uint64) { b.OutputBytes = v }, 256 << 20, 1 << 20, "bytes"},
	{"runs_per_day", func(b *contractualv1.JobBudgets) uint64 { return uint64(b.GetRunsPerDay()) },
		func(b *contractualv1.JobBudgets, v uint64) { b.RunsPerDay = uint32(v) }, 1440, 24, "runs"},
}

// budgets checks the budgets' ranges.
func (ps *problems) budgets(b *contractualv1.JobBudgets, steps int) {
	for _, f := range budgetFields {
		if v := f.get(b); v > f.max {
			ps.addf("budgets."+f.name, "%d is out of range 1..%d", v, f.max)
		}
	}
	if c := b.GetToolCallsPerRun(); c != 0 && int(c) < steps {
		ps.addf("budgets.tool_calls_per_run", "%d is fewer than the %d tool steps: no run could finish", c, steps)
	}
}

// misfire checks the misfire policy against the trigger.
func (ps *problems) misfire(m *contractualv1.Misfire, t *contractualv1.Trigger) {
	if m == nil {
		return
	}
	if t.GetWebhook() != nil {
		ps.addf("misfire", "a webhook trigger has no schedule to miss")
		return
	}
	catchUp := m.GetPolicy() == contractualv1.MisfirePolicy_MISFIRE_POLICY_CATCH_UP
	switch n := m.GetMaxCatchUp(); {
	case catchUp && (n == 0 || n > maxCatchUp):
		ps.addf("misfire.max_catch_up", "catch_up needs max_catch_up in 1..%d", maxCatchUp)
	case !catchUp && n != 0:
		ps.addf("misfire.max_catch_up", "only with policy catch_up")
	}
}

// retry checks the retries.
func (ps *problems) retry(r *contractualv1.Retry) {
	if a := r.GetAttempts(); a > maxAttempts {
		ps.addf("retry.attempts", "%d is out of range 0..%d", a, maxAttempts)
	}
	switch b := r.GetBackoffSeconds(); {
	case b != 0 && r.GetAttempts() == 0:
		ps.addf("retry.backoff_seconds", "only with attempts")
	case b > 3600:
		ps.addf("retry.backoff_seconds", "%d is out of range 1..3600", b)
	}
}
