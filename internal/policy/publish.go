package policy

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"unicode"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/runtime/modcheck"
	"github.com/contractual/contractual/runtime/wasmbin"
)

// defaultFilename names a contract published without a file name.
const defaultFilename = "contract"

// publication is a publish request that passed every check.
type publication struct {
	contract *contractualv1.Contract
	digest   string
	enc      []byte // the contract's canonical encoding
	wasm     []byte
}

// Publish validates a module and its contract and stores them, the
// contract as pending. Publishing a contract that is already stored
// changes nothing and returns it with existed set. The response carries
// the diff against the approved contract of the same name, if any. A
// refused publish changes nothing.
func (s *Service) Publish(ctx context.Context, req *contractualv1.PublishRequest) (*contractualv1.PublishResponse, error) {
	ev := event(actionPublish, principal.From(ctx), nil)
	who, err := owner(ctx)
	if err != nil {
		return nil, s.auditRefusal(ctx, ev, err)
	}
	p, err := prepare(req)
	if err != nil {
		if n := len(req.GetModule()); n > 0 && n <= modcheck.MaxModuleBytes {
			ev.ModuleDigest = contract.ModuleDigest(req.GetModule())
		}
		return nil, s.auditRefusal(ctx, ev, err)
	}
	return s.publish(ctx, who, p)
}

// prepare checks a publish request: sizes, the contract (parsed, validated
// and normalized), that it names this module, that the module imports
// nothing the contract does not grant and exports every tool.
func prepare(req *contractualv1.PublishRequest) (*publication, error) {
	wasm, data := req.GetModule(), req.GetContract()
	filename := cleanFilename(req.GetContractFilename())
	switch {
	case len(wasm) == 0:
		return nil, errs.E(errs.Invalid, "module is required: the .wasm bytes")
	case len(wasm) > modcheck.MaxModuleBytes:
		return nil, errs.E(errs.Invalid, "module is %d bytes, over the %d byte limit", len(wasm), modcheck.MaxModuleBytes)
	case len(data) == 0:
		return nil, errs.E(errs.Invalid, "contract is required: the YAML or JSON file")
	case len(data) > contract.MaxFileSize:
		return nil, errs.E(errs.Invalid, "%s: contract is %d bytes, over the %d byte limit", filename, len(data), contract.MaxFileSize)
	}
	c, err := contract.Load(data, filename)
	if err != nil {
		return nil, err
	}
	if md := contract.ModuleDigest(wasm); c.GetModule() != md {
		return nil, errs.E(errs.Invalid, "digest mismatch: contract names %s, module is %s", c.GetModule(), md)
	}
	if err := modcheck.Check(wasm, modcheck.GrantsFor(c)); err != nil {
		return nil, err
	}
	if err := checkExports(wasm, c); err != nil {
		return nil, err
	}
	enc, err := contract.Canonical(c)
	if err != nil {
		return nil, err
	}
	digest, err := contract.Digest(c)
	if err != nil {
		return nil, err
	}
	return &publication{contract: c, digest: digest, enc: enc, wasm: wasm}, nil
}

// checkExports refuses a contract that lists a tool its module does not
// export as a function.
func checkExports(wasm []byte, c *contractualv1.Contract) error {
	exports, err := wasmbin.Exports(wasm)
	if err != nil {
		return errs.Wrap(errs.Invalid, err, "reading the module's exports")
	}
	funcs := make(map[string]bool, len(exports))
	for _, e := range exports {
		funcs[e.Name] = funcs[e.Name] || e.Kind == wasmbin.KindFunc
	}
	var missing []string
	for _, t := range c.GetTools() {
		if !funcs[t.GetExport()] {
			missing = append(missing, fmt.Sprintf("%q", t.GetExport()))
		}
	}
	if len(missing) > 0 {
		return errs.E(errs.Invalid, "the contract lists tools the module does not export as functions: %s", strings.Join(missing, ", "))
	}
	return nil
}

// cleanFilename makes the contract's file name fit for messages.
func cleanFilename(name string) string {
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, clip(name, maxShortBytes))
	if name == "" {
		return defaultFilename
	}
	return name
}

// publish stores p for who, or finds it stored already, and records the
// publication in the audit log before committing.
func (s *Service) publish(ctx context.Context, who string, p *publication) (*contractualv1.PublishResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx = context.WithoutCancel(ctx) // once started, a change is recorded and committed together
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "starting a transaction")
	}
	defer tx.Rollback()
	existing, err := getRecord(ctx, tx, p.digest)
	switch {
	case err == nil:
		return s.republished(ctx, who, existing)
	case !errs.Is(err, errs.NotFound):
		return nil, err
	}
	rec := &contractualv1.ContractRecord{
		Digest:      p.digest,
		Contract:    p.contract,
		State:       contractualv1.ContractState_CONTRACT_STATE_PENDING,
		PublishedBy: who,
		PublishedAt: timestamppb.New(s.opts.Now()),
	}
	if err := s.insert(ctx, tx, rec, p); err != nil {
		return nil, err
	}
	resp := s.publishResponse(rec, false)
	ev := event(actionPublish, who, rec)
	ev.Outcome = outcomeOK
	ev.Detail = clip(publishDetail(rec, resp), maxDetailBytes)
	if err := s.audit(ctx, ev); err != nil {
		return nil, err
	}
	if err := s.commit(ctx, tx, ev); err != nil {
		return nil, err
	}
	// Tell the runner, which compiles the module while the owner reviews.
	s.setApproved(s.approved.Load(), approvalChange(rec, pending))
	return resp, nil
}

// insert stores the module (once per digest) and the record.
func (s *Service) insert(ctx context.Context, tx *sql.Tx, rec *contractualv1.ContractRecord, p *publication) error {
	if err := insertModule(ctx, tx, rec.GetContract().GetModule(), p.wasm, s.opts.Now()); err != nil {
		return err
	}
	return insertContract(ctx, tx, rec, p.enc)
}

// republished answers the publication of a contract that is stored
// already: nothing changes, but the attempt is recorded.
func (s *Service) republished(ctx context.Context, who string, rec *contractualv1.ContractRecord) (*contractualv1.PublishResponse, error) {
	ev := event(actionPublish, who, rec)
	ev.Outcome = outcomeOK
	ev.Detail = fmt.Sprintf("%s %s was already published (%s); nothing changed", rec.GetContract().GetName(), rec.GetDigest(), stateName(rec.GetState()))
	if err := s.audit(ctx, ev); err != nil {
		return nil, err
	}
	return s.publishResponse(rec, true), nil
}

// publishResponse returns rec with its diff against the approved contract
// of its name.
func (s *Service) publishResponse(rec *contractualv1.ContractRecord, existed bool) *contractualv1.PublishResponse {
	pred, diff := s.predecessor(rec)
	return &contractualv1.PublishResponse{Record: rec, Predecessor: pred, Diff: diff, Existed: existed}
}

// publishDetail describes a publication for the audit log.
func publishDetail(rec *contractualv1.ContractRecord, resp *contractualv1.PublishResponse) string {
	c := rec.GetContract()
	d := fmt.Sprintf("published %s %s (%d tools), pending approval", c.GetName(), c.GetVersion(), len(c.GetTools()))
	if resp.GetPredecessor() == "" {
		return d + "; no approved contract of that name"
	}
	counts := map[string]int{}
	for _, ch := range resp.GetDiff() {
		counts[ch.GetKind()]++
	}
	return fmt.Sprintf("%s; against approved %s: %d widened, %d narrowed, %d changed",
		d, resp.GetPredecessor(), counts["widened"], counts["narrowed"], counts["changed"])
}

// commit commits tx, whose change ev recorded. Should the commit fail after
// the audit log took the event, a second event says the change did not
// happen (best effort: the log cannot have been written just before).
func (s *Service) commit(ctx context.Context, tx *sql.Tx, evs ...*contractualv1.AuditEvent) error {
	err := tx.Commit()
	if err == nil {
		return nil
	}
	err = storeErr(err, "committing")
	var undo []*contractualv1.AuditEvent
	for _, ev := range evs {
		u := event(ev.GetAction(), ev.GetPrincipal(), nil)
		u.ContractDigest, u.ModuleDigest = ev.GetContractDigest(), ev.GetModuleDigest()
		u.Outcome = outcomeOf(err)
		u.Detail = clip("not done, the store could not commit: "+err.Error(), maxDetailBytes)
		undo = append(undo, u)
	}
	_ = s.audit(ctx, undo...)
	return err
}
