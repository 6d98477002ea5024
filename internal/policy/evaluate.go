package policy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// call is one call being decided.
type call struct {
	tool, name, export string
	who                string
	// runID is a job's run (the decision carries it).
	runID     string
	canonical []byte
	inputHash string
}

// Evaluate decides one call: tool "<contract name>.<export>", its JSON
// input and the principal it is made for. The answer is a signed decision
// bound to the hash of the canonical input, and that canonical input:
//   - allow: the approved contract of that name lists the tool, the input
//     meets its schema and the tool is not high-risk;
//   - approval required: the same for a high-risk tool, unless the owner
//     approved this exact call (see oneShot): the decision names the
//     pending call approval; the same call evaluated after its approval
//     is allowed once, naming the approval it used;
//   - deny: the name has contracts, but none is approved.
//
// A call that cannot be decided (malformed tool, principal or input, an
// unknown tool, an input that breaks the schema) is an error, not a
// decision, and is recorded as call.refused. Every decision is recorded as
// call.decision, with the input's hash, never the input, before it is
// returned; if the audit log cannot record it there is no decision.
func (s *Service) Evaluate(ctx context.Context, req *contractualv1.EvaluateRequest) (*contractualv1.EvaluateResponse, error) {
	if strings.HasPrefix(req.GetPrincipal(), "job:") || req.GetRunId() != "" || req.GetStep() != "" {
		return s.evaluateJob(ctx, req) // jobeval.go
	}
	c := &call{tool: req.GetTool(), who: req.GetPrincipal()}
	if strings.HasPrefix(c.who, "job:") {
		c.runID = req.GetRunId()
	}
	d, err := s.evaluate(ctx, c, req.GetInput())
	if err != nil {
		return nil, s.auditRefusal(ctx, refusedEvent(ctx, c), err)
	}
	signed, err := s.signer.Sign(d)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "policy: signing decision %s", d.GetId())
	}
	if err := s.audit(ctx, decisionEvent(d)); err != nil {
		return nil, err
	}
	return &contractualv1.EvaluateResponse{Decision: d, Signed: signed, CanonicalInput: c.canonical}, nil
}

// evaluate checks the call and returns its (unsigned) decision.
func (s *Service) evaluate(ctx context.Context, c *call, input []byte) (*contractualv1.Decision, error) {
	if err := c.parse(); err != nil {
		return nil, err
	}
	if len(input) == 0 {
		return nil, errs.E(errs.Invalid, "input is required: one JSON value, e.g. {}")
	}
	var err error
	if c.canonical, err = decision.Canonical(input); err != nil {
		return nil, err
	}
	c.inputHash = decision.Hash(c.canonical)
	e := s.approved.Load().byName[c.name]
	if e == nil {
		return s.unapproved(ctx, c)
	}
	te := e.tools[c.export]
	if te == nil {
		return nil, noTool(e.rec, c)
	}
	if err := te.checkInput(c.canonical); err != nil {
		return nil, err
	}
	d := s.newDecision(c, e.rec)
	if te.tool.GetRisk() == contractualv1.Risk_RISK_HIGH {
		return s.oneShot(ctx, c, d)
	}
	d.Verdict = contractualv1.Verdict_VERDICT_ALLOW
	d.Reason = fmt.Sprintf("contract %s %s, approved by %s, lists %s (risk %s)",
		c.name, e.rec.GetDigest(), e.rec.GetDecidedBy(), c.export, riskName(te.tool.GetRisk()))
	return d, nil
}

// parse checks the call's tool name and principal.
func (c *call) parse() error {
	name, export, ok := strings.Cut(c.tool, ".")
	if !ok || name == "" || export == "" {
		return errs.E(errs.Invalid, "tool %q is not <contract name>.<export>", clip(c.tool, 100))
	}
	c.name, c.export = name, export
	switch {
	case c.who == "":
		return errs.E(errs.Invalid, "principal is required")
	case !principal.Valid(c.who):
		return errs.E(errs.Invalid, `principal %q is not "device:<id>", "session:<id>" or "job:<id>"`, clip(c.who, 100))
	}
	return nil
}

// unapproved decides a call of a name without an approved contract: deny,
// naming the newest contract of that name and its state, or, if the name
// has no contract at all, an unknown tool.
func (s *Service) unapproved(ctx context.Context, c *call) (*contractualv1.Decision, error) {
	rec, err := latestRecord(ctx, s.db, c.name)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, errs.E(errs.NotFound, "unknown tool %s: there is no contract named %q", clip(c.tool, 200), clip(c.name, 100))
	}
	if !slices.ContainsFunc(rec.GetContract().GetTools(), func(t *contractualv1.Tool) bool { return t.GetExport() == c.export }) {
		return nil, noTool(rec, c)
	}
	d := s.newDecision(c, rec)
	d.Verdict = contractualv1.Verdict_VERDICT_DENY
	d.Reason = fmt.Sprintf("contract %s %s is %s", c.name, rec.GetDigest(), stateDescription(rec))
	return d, nil
}

// stateDescription says where an unapproved contract stands, for a denial.
func stateDescription(rec *contractualv1.ContractRecord) string {
	var s string
	switch rec.GetState() {
	case pending:
		return "pending approval; no version of it is approved"
	case rejected:
		s = "rejected by " + rec.GetDecidedBy()
	case revoked:
		s = "revoked by " + rec.GetDecidedBy()
	default:
		s = stateName(rec.GetState())
	}
	if rec.GetReason() != "" {
		s += ": " + rec.GetReason()
	}
	return s + "; no version of it is approved"
}

// noTool is the error for an export that the contract does not list.
func noTool(rec *contractualv1.ContractRecord, c *call) error {
	var exports []string
	for _, t := range rec.GetContract().GetTools() {
		exports = append(exports, t.GetExport())
	}
	return errs.E(errs.NotFound, "unknown tool %s: contract %s %s has no tool %q (it has %s)",
		clip(c.tool, 200), c.name, rec.GetDigest(), clip(c.export, 100), strings.Join(exports, ", "))
}

// newDecision returns a decision of c under rec, without a verdict.
func (s *Service) newDecision(c *call, rec *contractualv1.ContractRecord) *contractualv1.Decision {
	now := s.opts.Now()
	return &contractualv1.Decision{
		Id:             newID(),
		Tool:           c.tool,
		Export:         c.export,
		ContractDigest: rec.GetDigest(),
		ModuleDigest:   rec.GetContract().GetModule(),
		InputHash:      c.inputHash,
		Principal:      c.who,
		RunId:          c.runID,
		IssuedAt:       timestamppb.New(now),
		ExpiresAt:      timestamppb.New(now.Add(s.opts.DecisionTTL)),
	}
}

// newID returns a random decision id: 16 bytes, in hex.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// riskName is a risk class as a word: "low", "medium", "high".
func riskName(r contractualv1.Risk) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "RISK_"))
}

// verdictOutcome is a verdict as an audit outcome.
func verdictOutcome(v contractualv1.Verdict) string {
	return strings.ToLower(strings.TrimPrefix(v.String(), "VERDICT_"))
}

// decisionEvent is the audit event of a decision.
func decisionEvent(d *contractualv1.Decision) *contractualv1.AuditEvent {
	return &contractualv1.AuditEvent{
		Service:        service,
		Principal:      d.GetPrincipal(),
		Action:         actionDecision,
		Outcome:        verdictOutcome(d.GetVerdict()),
		ContractDigest: d.GetContractDigest(),
		ModuleDigest:   d.GetModuleDigest(),
		Tool:           d.GetTool(),
		InputHash:      d.GetInputHash(),
		DecisionId:     d.GetId(),
		Detail:         clip(d.GetReason(), maxDetailBytes),
	}
}

// refusedEvent is the audit event of a call that was refused: who asked
// (the call's principal if it is valid, else the caller's), the tool as
// given, and the input's hash if the input was JSON.
func refusedEvent(ctx context.Context, c *call) *contractualv1.AuditEvent {
	who := c.who
	if !principal.Valid(who) {
		who = principal.From(ctx)
	}
	return &contractualv1.AuditEvent{
		Service:   service,
		Principal: clip(who, maxShortBytes),
		Action:    actionRefused,
		Tool:      clip(c.tool, maxShortBytes),
		InputHash: c.inputHash,
	}
}
