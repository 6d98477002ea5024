package runner

import (
	"context"
	"strings"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/rpc"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/fairq"
	"github.com/contractual/contractual/runtime/sandbox"
)

// Audit actions of the runner.
const (
	// ActionRun is a call whose module ran, whatever the outcome.
	ActionRun = "call.run"
	// ActionRefused is a call that was refused before its module ran.
	ActionRefused = "call.refused"
)

// maxDetailBytes caps the detail (an error message) of an audit event.
const maxDetailBytes = 4 << 10

// call is one Execute in progress: what is known so far, for its audit
// event.
type call struct {
	event *contractualv1.AuditEvent
	// ran is set once the module was called.
	ran bool
}

// newCall starts the audit event of a call. Until the decision verifies,
// the principal is whoever sent the request, and the event carries nothing
// the decision claims: unverified claims do not belong in the log.
func newCall(ctx context.Context) *call {
	return &call{event: &contractualv1.AuditEvent{Service: "runner", Principal: principal.From(ctx)}}
}

// toolLabel names the call's tool for metrics: the one its verified
// decision names, or "unverified".
func (c *call) toolLabel() string {
	if t := c.event.GetTool(); t != "" {
		return t
	}
	return "unverified"
}

// decided records the verified decision d in the call's event.
func (c *call) decided(d *contractualv1.Decision) {
	ev := c.event
	ev.Principal = d.GetPrincipal()
	ev.Tool = d.GetTool()
	ev.ContractDigest = d.GetContractDigest()
	ev.ModuleDigest = d.GetModuleDigest()
	ev.DecisionId = d.GetId()
}

// verified is a request whose decision verified.
type verified struct {
	d *contractualv1.Decision
	// input is the canonical input: exactly what was decided, and what the
	// module gets.
	input []byte
	// at is when it verified.
	at time.Time
}

// verify checks req's decision for its input, before the call waits for a
// place: it is cheap (no I/O once the keys are fetched), and it makes the
// place the call waits for that of the principal and tool policy signed,
// not of whatever the request claims.
func (s *Service) verify(ctx context.Context, req *contractualv1.ExecuteRequest, c *call) (*verified, error) {
	input, err := decision.Canonical(req.GetInput())
	if err != nil {
		return nil, err
	}
	c.event.InputHash = decision.Hash(input)
	now := s.now()
	d, err := s.keys.verify(ctx, req.GetDecision(), input, now)
	if err != nil {
		return nil, err
	}
	c.decided(d)
	return &verified{d: d, input: input, at: now}, nil
}

// flow is the key of a call in the fair queues: the verified decision's
// principal and tool, or, for a call whose decision did not verify (it
// only waits to be refused and audited), the caller's principal.
func flow(ctx context.Context, v *verified) fairq.Key {
	if v == nil {
		return fairq.Key{Principal: principal.From(ctx)}
	}
	return fairq.Key{Principal: v.d.GetPrincipal(), Tool: v.d.GetTool()}
}

// execute does the work of Execute once the call has a place; finish
// audits what it did.
func (s *Service) execute(ctx context.Context, req *contractualv1.ExecuteRequest, c *call, v *verified) (*contractualv1.ExecuteResponse, error) {
	d := v.d
	if err := s.issuedSinceStart(d); err != nil {
		return nil, err
	}
	// Spent as of the time it verified: forgetting the ids that expired
	// since, during the wait for a place, could forget this very one.
	if err := s.spent.spend(d.GetId(), d.GetExpiresAt().AsTime(), v.at); err != nil {
		return nil, err
	}
	rec, err := s.approved(ctx, d)
	if err != nil {
		return nil, err
	}
	e, err := s.modules.get(ctx, rec.GetDigest(), rec.GetContract())
	if err != nil {
		return nil, err
	}
	defer s.modules.release(e)
	tool, err := checkCall(e, d)
	if err != nil {
		return nil, err
	}
	opts := []sandbox.CallOption{
		sandbox.WithFlow(d.GetPrincipal(), d.GetTool()),
		sandbox.WithSecrets(&handles{broker: s.broker, decision: req.GetDecision()}),
	}
	if run := d.GetRunId(); run != "" {
		// A job's call: each of its HTTP requests carries an idempotency
		// key derived from the run, the step and the action, the same every time
		// the worker retries the step.
		action := decision.ActionKey(run, d.GetStep(), d.GetTool(), d.GetInputHash())
		opts = append(opts, sandbox.WithIdempotencyKey(func(n int) string { return decision.RequestKey(action, n) }))
	}
	return s.run(ctx, c, e.mod, tool, v.input, opts...)
}

// issuedSinceStart refuses a decision issued before this runner started:
// the ids spent before a restart are gone, so such a decision might have
// run already. Its caller asks policy for a new one.
func (s *Service) issuedSinceStart(d *contractualv1.Decision) error {
	issued := d.GetIssuedAt()
	if issued == nil {
		return errs.E(errs.PermissionDenied, "decision %s has no issue time", d.GetId())
	}
	if issued.AsTime().Before(s.started) {
		return errs.E(errs.PermissionDenied,
			"decision %s was issued at %s, before this runner started (%s), so it may have run already; ask policy for a new one",
			d.GetId(), issued.AsTime().UTC().Format(time.RFC3339Nano), s.started.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// approved checks that the contract d names is, right now, the approved
// contract of that digest. A contract revoked after the decision was made
// does not run.
func (s *Service) approved(ctx context.Context, d *contractualv1.Decision) (*contractualv1.ContractRecord, error) {
	want := d.GetContractDigest()
	resp, err := s.policy.GetContract(ctx, &contractualv1.GetContractRequest{Digest: want})
	if err != nil {
		err = rpc.FromConnect(err)
		if errs.Is(err, errs.NotFound) || errs.Is(err, errs.Invalid) {
			return nil, errs.E(errs.PermissionDenied, "decision %s names contract %s, which policy does not have: %v", d.GetId(), want, err)
		}
		return nil, errs.Wrap(errs.Unavailable, err, "fetching contract %s from policy", want)
	}
	rec := resp.GetRecord()
	if got := rec.GetDigest(); got != want {
		return nil, errs.E(errs.PermissionDenied, "policy returned contract %q for %s", got, want)
	}
	if st := rec.GetState(); st != contractualv1.ContractState_CONTRACT_STATE_APPROVED {
		return nil, errs.E(errs.PermissionDenied, "contract %s is %s, not approved: decision %s may not run",
			want, stateName(st), d.GetId())
	}
	return rec, nil
}

// stateName is a contract state as a word: "revoked", "pending"...
func stateName(st contractualv1.ContractState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "CONTRACT_STATE_"))
}

// checkCall checks that the decision fits the contract the module was
// loaded under: same module, an export the contract lists as a tool, and
// the tool name "<contract name>.<export>". It returns that tool.
func checkCall(e *moduleEntry, d *contractualv1.Decision) (*contractualv1.Tool, error) {
	ct := e.contract
	if ct.GetModule() != d.GetModuleDigest() {
		return nil, errs.E(errs.PermissionDenied, "decision %s is for module %s, but contract %s runs module %s",
			d.GetId(), d.GetModuleDigest(), d.GetContractDigest(), ct.GetModule())
	}
	export := d.GetExport()
	var tool *contractualv1.Tool
	for _, t := range ct.GetTools() {
		if t.GetExport() == export && export != "" {
			tool = t
		}
	}
	if tool == nil {
		return nil, errs.E(errs.PermissionDenied, "contract %s (%s) has no tool %q: decision %s may not run it",
			d.GetContractDigest(), ct.GetName(), export, d.GetId())
	}
	if want := ct.GetName() + "." + export; d.GetTool() != want {
		return nil, errs.E(errs.PermissionDenied, "decision %s names tool %q, but its contract and export make it %q",
			d.GetId(), d.GetTool(), want)
	}
	if !e.mod.HasExport(export) {
		return nil, errs.E(errs.FailedPrecondition, "module %s does not export %q, which contract %s lists",
			ct.GetModule(), export, d.GetContractDigest())
	}
	return tool, nil
}

// run calls tool in a fresh instance of mod and maps the result: output
// that breaks the tool's output schema is refused, as `contractual run`
// refuses it. Secret values released to the call's egress are redacted from
// everything the module produced before it leaves the runner.
func (s *Service) run(ctx context.Context, c *call, mod *sandbox.Module, tool *contractualv1.Tool, input []byte, opts ...sandbox.CallOption) (*contractualv1.ExecuteResponse, error) {
	c.ran = true
	res, err := mod.CallTool(ctx, tool, input, opts...)
	if res == nil {
		res = &sandbox.Result{}
	}
	c.event.Egress = egressRecords(res.Egress)
	c.event.DurationUs = res.Duration.Microseconds()
	if err != nil {
		return nil, redactError(err, res.Released)
	}
	out := redact(res.Output, res.Released)
	c.event.OutputHash = decision.Hash(out)
	return &contractualv1.ExecuteResponse{
		Output:     out,
		Egress:     c.event.Egress,
		Logs:       logLines(res.Logs, res.Released),
		DurationUs: c.event.DurationUs,
	}, nil
}

// finish audits the call and decides what the caller gets: resp and err as
// they are if the event is recorded, otherwise an errs.Unavailable error and
// no output (fail closed).
func (s *Service) finish(ctx context.Context, c *call, resp *contractualv1.ExecuteResponse, err error) (*contractualv1.ExecuteResponse, error) {
	ev := c.event
	ev.Action = ActionRefused
	if c.ran {
		ev.Action = ActionRun
	}
	ev.Outcome = "ok"
	if err != nil {
		ev.Outcome = errs.KindOf(err).String()
		ev.Detail = truncate(err.Error(), maxDetailBytes)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.AuditTimeout)
	defer cancel()
	_, aerr := s.audit.Append(actx, &contractualv1.AppendRequest{Events: []*contractualv1.AuditEvent{ev}})
	if aerr == nil {
		return resp, err
	}
	aerr = rpc.FromConnect(aerr)
	s.log.Error("audit append failed; failing the call closed", "action", ev.Action, "decision", ev.DecisionId, "err", aerr)
	if err == nil {
		return nil, errs.Wrap(errs.Unavailable, aerr,
			"the call ran but the audit log could not record it, so its output is withheld")
	}
	return nil, errs.Wrap(errs.Unavailable, aerr,
		"the call failed (%s) and the audit log could not record it", truncate(err.Error(), maxDetailBytes))
}

// admit takes a place for one call of flow k inside Execute, waiting for
// one (fairly, boundedly: see Options), and returns the function that gives
// it back.
func (s *Service) admit(ctx context.Context, k fairq.Key) (func(), error) {
	slot, err := s.places.Acquire(ctx, k)
	if err != nil {
		return nil, err
	}
	return slot.Release, nil
}

// egressRecords maps the sandbox's egress records onto the API's.
func egressRecords(rs []egress.Record) []*contractualv1.EgressRecord {
	if len(rs) == 0 {
		return nil
	}
	out := make([]*contractualv1.EgressRecord, len(rs))
	for i, r := range rs {
		out[i] = &contractualv1.EgressRecord{
			Method:   r.Method,
			Url:      r.URL,
			Status:   int32(r.Status),
			Bytes:    r.Bytes,
			Allowed:  r.Allowed,
			Rule:     int32(r.Rule),
			Reason:   r.Reason,
			Redirect: int32(r.Redirect),
		}
	}
	return out
}

// logLines maps the module's log entries onto the API's, redacted.
func logLines(entries []sandbox.LogEntry, released [][]byte) []*contractualv1.LogLine {
	if len(entries) == 0 {
		return nil
	}
	out := make([]*contractualv1.LogLine, len(entries))
	for i, e := range entries {
		out[i] = &contractualv1.LogLine{Level: e.Level, Message: string(redact([]byte(e.Message), released))}
	}
	return out
}

// truncate cuts s to at most n bytes, the ellipsis included, on a rune
// boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	n = max(n-len(ellipsis), 0)
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + ellipsis
}
