package policy

import (
	"context"
	"database/sql"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// drift pauses, in tx, every approved job that pins the contract a
// transition takes out of approval: the one rec supersedes (kind
// contract_changed, with the diff to rec), or rec revoked (kind
// contract_revoked). It returns the paused versions and their audit
// events, which commit with the transition: a job never runs a call under
// a contract other than the one its owner approved it with.
func (s *Service) drift(ctx context.Context, tx *sql.Tx, t transition, rec, superseded *contractualv1.ContractRecord) ([]*contractualv1.JobRecord, []*contractualv1.AuditEvent, error) {
	gone, by := rec, (*contractualv1.ContractRecord)(nil)
	kind := contractualv1.PauseKind_PAUSE_KIND_CONTRACT_REVOKED
	switch {
	case t.to == approved && superseded != nil:
		gone, by, kind = superseded, rec, contractualv1.PauseKind_PAUSE_KIND_CONTRACT_CHANGED
	case t.to != revoked:
		return nil, nil, nil
	}
	jobs, err := jobsPinning(ctx, tx, gone.GetDigest())
	if err != nil || len(jobs) == 0 {
		return nil, nil, err
	}
	name := gone.GetContract().GetName()
	p := &contractualv1.JobPause{
		Kind: kind, PausedBy: rec.GetDecidedBy(), PausedAt: timestamppb.New(rec.GetDecidedAt().AsTime()),
		Contract: name, PinnedDigest: gone.GetDigest(),
	}
	if by != nil {
		p.ApprovedDigest = by.GetDigest()
		p.Diff = changes(contract.Diff(gone.GetContract(), by.GetContract()))
		p.Reason = fmt.Sprintf("contract %s %s, which the job pins, was replaced by %s (approved by %s): resume the job to approve it under the new contract",
			name, gone.GetDigest(), by.GetDigest(), by.GetDecidedBy())
	} else {
		p.Reason = fmt.Sprintf("contract %s %s, which the job pins, was revoked by %s, and no version of it is approved", name, gone.GetDigest(), rec.GetDecidedBy())
		if rec.GetReason() != "" {
			p.Reason += " (" + rec.GetReason() + ")"
		}
	}
	var evs []*contractualv1.AuditEvent
	for i, j := range jobs {
		jobs[i] = paused(j, proto.CloneOf(p))
		if err := updateJob(ctx, tx, jobs[i], jobApproved); err != nil {
			return nil, nil, err
		}
		evs = append(evs, pauseEvent(jobs[i]))
	}
	return jobs, evs, nil
}
