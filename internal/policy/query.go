package policy

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/paging"
)

// ListContracts lists contracts newest first (in publish order), a page
// at a time (see internal/paging), only those that match every filter the
// request sets: name, name prefix, state, tool.
func (s *Service) ListContracts(ctx context.Context, req *contractualv1.ListContractsRequest) (*contractualv1.ListContractsResponse, error) {
	f, err := listFilterOf(req)
	if err != nil {
		return nil, err
	}
	n, err := paging.Size(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	key := f.key()
	var after int64
	if _, err := paging.Decode(req.GetPageToken(), "contracts", key, &after); err != nil {
		return nil, err
	}
	recs, last, more, err := pageRecords(ctx, s.db, f, after, n)
	if err != nil {
		return nil, err
	}
	resp := &contractualv1.ListContractsResponse{Records: recs}
	if more {
		resp.NextPageToken = paging.Encode("contracts", key, last)
	}
	return resp, nil
}

// prefixRE is a name prefix: the characters of contract names.
var prefixRE = regexp.MustCompile(`^[a-z0-9-]{0,63}$`)

// listFilterOf reads and checks the filters of req.
func listFilterOf(req *contractualv1.ListContractsRequest) (listFilter, error) {
	f := listFilter{name: req.GetName(), prefix: req.GetNamePrefix(), state: req.GetState()}
	if _, known := contractualv1.ContractState_name[int32(f.state)]; !known {
		return f, errs.E(errs.Invalid, "state %d is not a contract state", int32(f.state))
	}
	if !prefixRE.MatchString(f.prefix) {
		return f, errs.E(errs.Invalid, "name_prefix %q is not the start of a contract name (lowercase letters, digits and \"-\")", clip(f.prefix, 100))
	}
	if t := req.GetTool(); t != "" {
		name, export, ok := strings.Cut(t, ".")
		if !ok || name == "" || export == "" {
			return f, errs.E(errs.Invalid, `tool %q is not "<contract name>.<export>"`, clip(t, 100))
		}
		if f.name != "" && f.name != name {
			return f, errs.E(errs.Invalid, "tool %q is not a tool of contracts named %q", clip(t, 100), clip(f.name, 100))
		}
		f.name, f.export = name, export
	}
	return f, nil
}

// key tells filters apart, for page tokens.
func (f listFilter) key() string {
	return fmt.Sprintf("name=%q prefix=%q export=%q state=%d", f.name, f.prefix, f.export, f.state)
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
