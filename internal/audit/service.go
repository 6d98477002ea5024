package audit

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/tailnet"
)

// Service is the AuditService over a Store: the Connect handler, and the
// in-process client other services append through. Requests are validated
// by the Store (errs.Invalid): at most MaxAppend events, each with an
// action, a detail of at most MaxDetailBytes, and sane sizes elsewhere.
type Service struct {
	store *Store
}

var (
	_ contractualv1connect.AuditServiceHandler         = (*Service)(nil)
	_ contractualv1connect.AuditInternalServiceHandler = (*Service)(nil)
)

// NewService returns the service over st.
func NewService(st *Store) *Service { return &Service{store: st} }

// Config configures the audit service: where its log is, and the log's
// Options (retention above all).
type Config struct {
	// Dir holds the log.
	Dir string
	Options
}

// Deps are the services the audit service calls: none; every other
// service calls it.
type Deps struct{}

// OpenService opens the log in cfg.Dir (see Open) and returns its service.
func OpenService(ctx context.Context, cfg Config, _ Deps) (*Service, error) {
	if cfg.Dir == "" {
		return nil, errs.E(errs.Invalid, "audit: no store directory")
	}
	st, err := Open(ctx, cfg.Dir, cfg.Options)
	if err != nil {
		return nil, err
	}
	return NewService(st), nil
}

// Store returns the underlying store.
func (s *Service) Store() *Store { return s.store }

// Append durably records the request's events, in order, and returns
// their indexes.
//
// An event that names no tailnet peer gets the one of the device request
// that caused it (tailnet.From, passed on by every service on the way), so
// that each event a request causes records the node it came from.
func (s *Service) Append(ctx context.Context, req *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error) {
	if peer := tailnet.From(ctx); peer != nil {
		for _, ev := range req.GetEvents() {
			if ev != nil && ev.Tailnet == nil {
				ev.Tailnet = peer.Proto()
			}
		}
	}
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

// Verify checks the hash chain and the signed checkpoints appended since
// the last verification, or with full the whole live log.
func (s *Service) Verify(ctx context.Context, req *contractualv1.VerifyRequest) (*contractualv1.VerifyResponse, error) {
	if req.GetFull() {
		return s.store.VerifyFull(ctx)
	}
	return s.store.Verify(ctx)
}

// LatestCheckpoint returns the newest signed checkpoint, if there is one,
// and the anchor, if the log was pruned.
func (s *Service) LatestCheckpoint(ctx context.Context, _ *contractualv1.LatestCheckpointRequest) (*contractualv1.LatestCheckpointResponse, error) {
	c, err := s.store.LatestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	a, err := s.store.Anchor(ctx)
	if err != nil {
		return nil, err
	}
	return &contractualv1.LatestCheckpointResponse{Checkpoint: c, Anchor: a}, nil
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
	case errors.Is(err, ErrPruned):
		pruned, perr := s.pruned(ctx, req.GetSeen().GetIndex())
		if perr != nil {
			return nil, perr
		}
		problem := strings.TrimPrefix(err.Error(), ErrPruned.Error()+": ")
		return &contractualv1.CheckConsistencyResponse{Problem: problem, Latest: latest, Pruned: pruned}, nil
	case errors.Is(err, ErrTampered):
		problem := strings.TrimPrefix(err.Error(), ErrTampered.Error()+": ")
		return &contractualv1.CheckConsistencyResponse{Problem: problem, Latest: latest}, nil
	case err != nil:
		return nil, err
	}
	return &contractualv1.CheckConsistencyResponse{Ok: true, Latest: latest}, nil
}

// pruned describes the pruned events after index seen: the anchor and the
// recorded exports that hold them.
func (s *Service) pruned(ctx context.Context, seen uint64) (*contractualv1.Pruned, error) {
	seg, err := s.store.Segments(ctx)
	if err != nil {
		return nil, err
	}
	p := &contractualv1.Pruned{Anchor: seg.GetAnchor()}
	for _, x := range seg.GetExports() {
		if x.GetSealIndex() > seen && x.GetStartIndex() < seg.GetAnchor().GetIndex() {
			p.Exports = append(p.Exports, x)
		}
	}
	return p, nil
}

// GetCheckpoint returns a checkpoint by seq, or the newest signed before a
// time.
func (s *Service) GetCheckpoint(ctx context.Context, req *contractualv1.GetCheckpointRequest) (*contractualv1.GetCheckpointResponse, error) {
	c, err := s.store.GetCheckpoint(ctx, req.GetSeq(), optTime(req.GetBefore()))
	if err != nil {
		return nil, err
	}
	return &contractualv1.GetCheckpointResponse{Checkpoint: c}, nil
}

// Segments returns the anchor, the newest checkpoint and the exports.
func (s *Service) Segments(ctx context.Context, _ *contractualv1.SegmentsRequest) (*contractualv1.SegmentsResponse, error) {
	return s.store.Segments(ctx)
}

// RecordExport records an exported segment whose digest the store
// recomputed.
func (s *Service) RecordExport(ctx context.Context, req *contractualv1.RecordExportRequest) (*contractualv1.RecordExportResponse, error) {
	x, err := s.store.RecordExport(ctx, req.GetStartSeq(), req.GetSealSeq(), req.GetSha256(), req.GetName())
	if err != nil {
		return nil, err
	}
	return &contractualv1.RecordExportResponse{Export: x}, nil
}

// Prune drops the exported events before a checkpoint.
func (s *Service) Prune(ctx context.Context, req *contractualv1.PruneRequest) (*contractualv1.PruneResponse, error) {
	a, n, err := s.store.Prune(ctx, req.GetSeq(), optTime(req.GetBefore()))
	if err != nil {
		return nil, err
	}
	return &contractualv1.PruneResponse{Anchor: a, Dropped: n}, nil
}

// optTime is t as a time, zero if absent or invalid.
func optTime(t *timestamppb.Timestamp) time.Time {
	if t == nil || t.CheckValid() != nil {
		return time.Time{}
	}
	return t.AsTime()
}

// Close writes a final checkpoint and closes the store.
func (s *Service) Close(ctx context.Context) error { return s.store.Close(ctx) }
