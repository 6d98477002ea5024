package worker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/paging"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/rpc"
)

// Triggers a firing may name in Enqueue; RunJob's runs are "manual".
var enqueueTriggers = []string{"cron", "once", "webhook"}

// TriggerManual is the trigger of a run the owner asked for (RunJob).
const TriggerManual = "manual"

var (
	jobIDRE  = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// maxPayloadBytes bounds a run's payload, as JSON.
const maxPayloadBytes = 1 << 20

// RunID is the id of the run of job's trigger due at scheduledNs (Unix
// nanoseconds) with delivery (a webhook's delivery id; else empty): 32 hex
// digits of a hash of them, so the same firing is the same run.
func RunID(job, trigger string, scheduledNs int64, delivery string) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%s", job, trigger, scheduledNs, delivery))
	return hex.EncodeToString(sum[:16])
}

// Enqueue enqueues a run that a trigger fired; the same firing again
// returns the run it enqueued, with existed set.
func (s *Service) Enqueue(ctx context.Context, req *contractualv1.EnqueueRequest) (*contractualv1.EnqueueResponse, error) {
	switch {
	case !jobIDRE.MatchString(req.GetJobId()):
		return nil, errs.E(errs.Invalid, "job_id %q is not a job id", clip(req.GetJobId()))
	case !digestRE.MatchString(req.GetJobDigest()):
		return nil, errs.E(errs.Invalid, `job_digest %q is not "sha256:" and 64 lowercase hex digits`, clip(req.GetJobDigest()))
	case !slices.Contains(enqueueTriggers, req.GetTrigger()):
		return nil, errs.E(errs.Invalid, "trigger %q is not one of %s", clip(req.GetTrigger()), strings.Join(enqueueTriggers, ", "))
	case req.GetScheduledAt() == nil || req.GetScheduledAt().CheckValid() != nil:
		return nil, errs.E(errs.Invalid, "scheduled_at is required")
	case len(req.GetDeliveryId()) > 256:
		return nil, errs.E(errs.Invalid, "delivery_id is longer than 256 bytes")
	}
	at := req.GetScheduledAt().AsTime()
	return s.enqueue(ctx, newRun{
		id:  RunID(req.GetJobId(), req.GetTrigger(), at.UnixNano(), req.GetDeliveryId()),
		job: req.GetJobId(), digest: req.GetJobDigest(), trigger: req.GetTrigger(), delivery: req.GetDeliveryId(),
		scheduled: at,
	}, req.GetPayload())
}

// enqueue stores r with payload (absent: {}) and returns the run.
func (s *Service) enqueue(ctx context.Context, r newRun, payload *structpb.Value) (*contractualv1.EnqueueResponse, error) {
	r.payload = []byte("{}")
	if payload != nil {
		b, err := protojson.Marshal(payload)
		if err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "payload")
		}
		if len(b) > maxPayloadBytes {
			return nil, errs.E(errs.Invalid, "payload is %d bytes of JSON, over the limit of %d", len(b), maxPayloadBytes)
		}
		r.payload = b
	}
	r.now = s.cfg.Now()
	existed, err := insertRun(ctx, s.db, r)
	if err != nil {
		return nil, err
	}
	if !existed {
		s.notify()
	}
	st, _, err := getRun(ctx, s.db, r.id)
	if err != nil {
		return nil, err
	}
	return &contractualv1.EnqueueResponse{Run: st.run, Existed: existed}, nil
}

// RunJob enqueues a run of an approved, unpaused job now, for the device
// that asks.
func (s *Service) RunJob(ctx context.Context, req *contractualv1.RunJobRequest) (*contractualv1.RunJobResponse, error) {
	who := principal.From(ctx)
	if !strings.HasPrefix(who, "device:") {
		return nil, errs.E(errs.PermissionDenied, "only the owner's paired devices may run a job now")
	}
	if !jobIDRE.MatchString(req.GetId()) {
		return nil, errs.E(errs.Invalid, "id %q is not a job id", clip(req.GetId()))
	}
	// The worker reads the job as itself, not for the device.
	resp, err := s.deps.Jobs.GetJob(principal.With(ctx, ""), &contractualv1.GetJobRequest{Id: req.GetId()})
	if err != nil {
		return nil, rpc.FromConnect(err)
	}
	rec := resp.GetRecord()
	if st := rec.GetState(); st != contractualv1.JobState_JOB_STATE_APPROVED {
		why := ""
		if p := rec.GetPause(); p != nil && p.GetReason() != "" {
			why = ": " + p.GetReason()
		}
		return nil, errs.E(errs.FailedPrecondition, "job %s is %s, not approved%s", req.GetId(), jobStateName(st), why)
	}
	now := s.cfg.Now()
	delivery := rand.Text() // every RunJob is a new run
	out, err := s.enqueue(ctx, newRun{
		id:  RunID(rec.GetId(), TriggerManual, now.UnixNano(), delivery),
		job: rec.GetId(), digest: rec.GetDigest(), trigger: TriggerManual, delivery: delivery, requestedBy: who,
		scheduled: now,
	}, req.GetPayload())
	if err != nil {
		return nil, err
	}
	return &contractualv1.RunJobResponse{Run: out.GetRun()}, nil
}

// runsList names ListRuns's page tokens.
const runsList = "runs"

// ListRuns lists a job's runs, newest first, a page at a time.
func (s *Service) ListRuns(ctx context.Context, req *contractualv1.ListRunsRequest) (*contractualv1.ListRunsResponse, error) {
	if !jobIDRE.MatchString(req.GetJobId()) {
		return nil, errs.E(errs.Invalid, "job_id %q is not a job id", clip(req.GetJobId()))
	}
	n, err := paging.Size(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var after int64
	if _, err := paging.Decode(req.GetPageToken(), runsList, req.GetJobId(), &after); err != nil {
		return nil, err
	}
	runs, more, err := pageRuns(ctx, s.db, req.GetJobId(), after, n)
	if err != nil {
		return nil, err
	}
	resp := &contractualv1.ListRunsResponse{}
	for _, st := range runs {
		resp.Runs = append(resp.Runs, st.run)
	}
	if more {
		resp.NextPageToken = paging.Encode(runsList, req.GetJobId(), runs[len(runs)-1].seq)
	}
	return resp, nil
}

// GetRun returns one run with its steps.
func (s *Service) GetRun(ctx context.Context, req *contractualv1.GetRunRequest) (*contractualv1.GetRunResponse, error) {
	if req.GetId() == "" || len(req.GetId()) > 64 {
		return nil, errs.E(errs.Invalid, "id is required (a run id)")
	}
	st, _, err := getRun(ctx, s.db, req.GetId())
	if err != nil {
		return nil, err
	}
	return &contractualv1.GetRunResponse{Run: st.run}, nil
}
