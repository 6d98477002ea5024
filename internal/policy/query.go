package policy

import (
	"context"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// ListContracts lists contracts newest first (in publish order), only
// those of the request's name and state when they are set.
func (s *Service) ListContracts(ctx context.Context, req *contractualv1.ListContractsRequest) (*contractualv1.ListContractsResponse, error) {
	st := req.GetState()
	if _, known := contractualv1.ContractState_name[int32(st)]; !known {
		return nil, errs.E(errs.Invalid, "state %d is not a contract state", int32(st))
	}
	recs, err := listRecords(ctx, s.db, req.GetName(), st)
	if err != nil {
		return nil, err
	}
	return &contractualv1.ListContractsResponse{Records: recs}, nil
}

// GetContract returns one contract and, unless it is the approved contract
// of its name, its diff against that one. The approved contracts are
// served from memory: the runner asks for its contract on every call.
func (s *Service) GetContract(ctx context.Context, req *contractualv1.GetContractRequest) (*contractualv1.GetContractResponse, error) {
	d := req.GetDigest()
	if err := checkDigest("contract", d); err != nil {
		return nil, err
	}
	if e := s.approved.Load().byDigest[d]; e != nil {
		return &contractualv1.GetContractResponse{Record: e.record()}, nil
	}
	rec, err := getRecord(ctx, s.db, d)
	if err != nil {
		return nil, err
	}
	pred, diff := s.predecessor(rec)
	return &contractualv1.GetContractResponse{Record: rec, Predecessor: pred, Diff: diff}, nil
}

// predecessor returns the approved contract of rec's name and rec's diff
// against it, or nothing if rec is that contract or there is none.
func (s *Service) predecessor(rec *contractualv1.ContractRecord) (string, []*contractualv1.ContractChange) {
	e := s.approved.Load().byName[rec.GetContract().GetName()]
	if e == nil || e.rec.GetDigest() == rec.GetDigest() {
		return "", nil
	}
	return e.rec.GetDigest(), changes(contract.Diff(e.rec.GetContract(), rec.GetContract()))
}

// changes converts a contract diff to its API form.
func changes(cs []contract.Change) []*contractualv1.ContractChange {
	out := make([]*contractualv1.ContractChange, 0, len(cs))
	for _, c := range cs {
		out = append(out, &contractualv1.ContractChange{Kind: c.Kind.String(), Path: c.Path, Old: c.Old, New: c.New})
	}
	return out
}
