package job

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// invalid returns problems with a job not read from a file.
func invalid(ps []Problem) error {
	return contract.Invalid("job", "", ps)
}

// Normalize rewrites j, in place, into the normal form its digest is
// computed on, so that equivalent jobs have one digest whatever their
// spelling or key order:
//
//   - budgets, the webhook's replay window and the retry backoff get their
//     defaults written in;
//   - a cron expression's fields are separated by one space, and macros
//     take one name (@midnight is @daily, @annually @yearly);
//   - a one-shot time is written in UTC;
//   - an agent step's max_model_requests gets its default, and its tools
//     are sorted by name;
//   - the default misfire policy (skip) and no retries are left out;
//   - bounds are sorted by tool and pointer (their order carries no
//     meaning), allowed values sorted and de-duplicated, and -0 bounds
//     made 0.
//
// It keeps the order of steps, which is the order they run in. Call it on a
// valid job; it does not make an invalid job valid.
func Normalize(j *contractualv1.Job) {
	if c := j.GetTrigger().GetCron(); c != nil {
		c.Expression = strings.Join(strings.Fields(c.GetExpression()), " ")
		if m, ok := cronMacros[c.GetExpression()]; ok {
			c.Expression = m
		}
	}
	if o := j.GetTrigger().GetOnce(); o != nil {
		if t, err := time.Parse(time.RFC3339, o.GetAt()); err == nil {
			o.At = t.UTC().Format(time.RFC3339Nano)
		}
	}
	if w := j.GetTrigger().GetWebhook(); w != nil && w.GetReplayWindowSeconds() == 0 {
		w.ReplayWindowSeconds = 300
	}
	if j.Budgets == nil {
		j.Budgets = &contractualv1.JobBudgets{}
	}
	for _, f := range budgetFields {
		if f.get(j.Budgets) == 0 {
			f.set(j.Budgets, f.def)
		}
	}
	for _, s := range j.GetSteps() {
		if a := s.GetAgent(); a != nil {
			normalizeAgent(a)
		}
	}
	if j.Budgets.ToolCallsPerRun == 0 {
		j.Budgets.ToolCallsPerRun = defaultToolCalls(j.GetSteps())
	}
	if m := j.GetMisfire(); m != nil {
		if m.GetPolicy() == contractualv1.MisfirePolicy_MISFIRE_POLICY_SKIP {
			m.Policy = contractualv1.MisfirePolicy_MISFIRE_POLICY_UNSPECIFIED
		}
		if m.GetPolicy() == contractualv1.MisfirePolicy_MISFIRE_POLICY_UNSPECIFIED && m.GetMaxCatchUp() == 0 {
			j.Misfire = nil
		}
	}
	if r := j.GetRetry(); r != nil {
		if r.GetAttempts() == 0 && r.GetBackoffSeconds() == 0 {
			j.Retry = nil
		} else if r.GetBackoffSeconds() == 0 {
			r.BackoffSeconds = 10
		}
	}
	for _, b := range j.GetBounds() {
		for _, in := range b.GetInputs() {
			normalizeBound(in)
		}
		slices.SortStableFunc(b.Inputs, func(x, y *contractualv1.InputBound) int { return cmp.Compare(x.GetPointer(), y.GetPointer()) })
	}
	slices.SortStableFunc(j.Bounds, func(x, y *contractualv1.ToolBounds) int { return cmp.Compare(x.GetTool(), y.GetTool()) })
}

// normalizeBound sorts and de-duplicates allowed values and clears -0.
func normalizeBound(in *contractualv1.InputBound) {
	keyed := make(map[string]*structpb.Value, len(in.GetAllowed()))
	for _, v := range in.GetAllowed() {
		keyed[jsonText(v)] = v
	}
	in.Allowed = in.Allowed[:0]
	for _, k := range sortedKeys(keyed) {
		in.Allowed = append(in.Allowed, keyed[k])
	}
	for _, f := range []*float64{in.Minimum, in.Maximum} {
		if f != nil && *f == 0 {
			*f = 0 // -0 == 0, and this writes +0
		}
	}
}

// jsonText returns v as compact JSON with sorted keys (encoding/json's,
// which, unlike protojson's, is stable across builds).
func jsonText(v *structpb.Value) string {
	b, err := json.Marshal(v.AsInterface())
	if err != nil {
		return "?"
	}
	return string(b)
}

// Canonical returns the canonical encoding of j: the deterministic protobuf
// encoding of its normal form, computed on a copy.
func Canonical(j *contractualv1.Job) ([]byte, error) {
	if j == nil {
		return nil, errs.E(errs.Invalid, "job is missing")
	}
	n := proto.CloneOf(j)
	Normalize(n)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(n)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "encoding job")
	}
	return b, nil
}

// Digest returns the job's digest, "sha256:" and the hex sha256 of its
// canonical encoding: what the owner's approval binds.
func Digest(j *contractualv1.Job) (string, error) {
	b, err := Canonical(j)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}
