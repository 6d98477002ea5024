package audit

import (
	"context"
	"errors"
	"strings"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
)

// Service is the AuditService over a Store: the Connect handler, and the
// in-process client other services append through. Requests are validated
// by the Store (errs.Invalid): at most MaxAppend events, each with an
// action, a detail of at most MaxDetailBytes, and sane sizes elsewhere.
type Service struct {
	store *Store
}

var _ contractualv1connect.AuditServiceHandler = (*Service)(nil)

// NewService returns the service over st.
func NewService(st *Store) *Service { return &Service{store: st} }

// OpenService opens the log in dir (see Open) and returns its service.
func OpenService(ctx context.Context, dir string, opts Options) (*Service, error) {
	st, err := Open(ctx, dir, opts)
	if err != nil {
		return nil, err
	}
	return NewService(st), nil
}

// Store returns the underlying store.
func (s *Service) Store() *Store { return s.store }

// Append durably records the request's events, in order, and returns
// their indexes.
func (s *Service) Append(ctx context.Context, req *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error) {
	idxs, err := s.store.Append(ctx, req.GetEvents())
	if err != nil {
		return nil, err
	}
	return &contractualv1.AppendResponse{Indexes: idxs}, nil
}

// Tail returns the newest events, oldest first.
func (s *Service) Tail(ctx context.Context, req *contractualv1.TailRequest) (*contractualv1.TailResponse, error) {
	events, err := s.store.Tail(ctx, req.GetAfter(), int(min(req.GetLimit(), MaxTailLimit)))
	if err != nil {
		return nil, err
	}
	return &contractualv1.TailResponse{Events: events}, nil
}

// Verify recomputes the hash chain and checks every signed checkpoint.
func (s *Service) Verify(ctx context.Context, _ *contractualv1.VerifyRequest) (*contractualv1.VerifyResponse, error) {
	return s.store.Verify(ctx)
}

// LatestCheckpoint returns the newest signed checkpoint, if there is one.
func (s *Service) LatestCheckpoint(ctx context.Context, _ *contractualv1.LatestCheckpointRequest) (*contractualv1.LatestCheckpointResponse, error) {
	c, err := s.store.LatestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	return &contractualv1.LatestCheckpointResponse{Checkpoint: c}, nil
}

// Entries returns the stored encodings of the events after an index.
func (s *Service) Entries(ctx context.Context, req *contractualv1.EntriesRequest) (*contractualv1.EntriesResponse, error) {
	es, err := s.store.Entries(ctx, req.GetAfter(), int(min(req.GetLimit(), MaxEntries)))
	if err != nil {
		return nil, err
	}
	return &contractualv1.EntriesResponse{Entries: es}, nil
}

// CheckConsistency checks that the log extends the checkpoint a device saw.
// Tampering is an answer (Ok false), not an error.
func (s *Service) CheckConsistency(ctx context.Context, req *contractualv1.CheckConsistencyRequest) (*contractualv1.CheckConsistencyResponse, error) {
	latest, err := s.store.CheckConsistency(ctx, req.GetSeen())
	switch {
	case errors.Is(err, ErrTampered):
		problem := strings.TrimPrefix(err.Error(), ErrTampered.Error()+": ")
		return &contractualv1.CheckConsistencyResponse{Problem: problem, Latest: latest}, nil
	case err != nil:
		return nil, err
	}
	return &contractualv1.CheckConsistencyResponse{Ok: true, Latest: latest}, nil
}

// Close writes a final checkpoint and closes the store.
func (s *Service) Close(ctx context.Context) error { return s.store.Close(ctx) }
