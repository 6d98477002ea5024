package scheduler

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/rpc"
)

// The webhook signature scheme. A sender POSTs the JSON payload to
// /hooks/<job id> with three headers:
//
//	Contractual-Timestamp: the time of sending, in Unix seconds (decimal)
//	Contractual-Delivery:  an id unique to the delivery: 1 to 128 of
//	                       A-Z a-z 0-9 . _ : -
//	Contractual-Signature: sha256=<hex HMAC-SHA256>
//
// The HMAC is keyed by the value of the broker secret that the job's
// webhook trigger names, over the bytes "<timestamp>.<delivery>.<body>":
// the two header values as sent, then the body exactly as sent. A request
// whose timestamp is more than the trigger's replay window away from the
// server's time is refused, and so is a delivery id already received for
// the job within the window; a replay of a signed request is refused either
// way.
const (
	HeaderTimestamp = "Contractual-Timestamp"
	HeaderDelivery  = "Contractual-Delivery"
	HeaderSignature = "Contractual-Signature"
	signaturePrefix = "sha256="
)

// DefaultReplayWindow is a webhook trigger's replay window when the job
// does not set one.
const DefaultReplayWindow = 300 * time.Second

var (
	deliveryRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	jobIDRE    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	unixRE     = regexp.MustCompile(`^[0-9]{1,12}$`)
)

// Sign returns the Contractual-Signature header of a delivery signed with
// key, for senders and tests.
func Sign(key []byte, timestamp, delivery string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(signedMessage(timestamp, delivery, body))
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// signedMessage is what a delivery's HMAC covers.
func signedMessage(timestamp, delivery string, body []byte) []byte {
	msg := make([]byte, 0, len(timestamp)+len(delivery)+2+len(body))
	msg = append(msg, timestamp...)
	msg = append(msg, '.')
	msg = append(msg, delivery...)
	msg = append(msg, '.')
	return append(msg, body...)
}

// notSigned is the answer to a delivery that does not verify, whatever
// the reason: the job does not exist, is not approved (paused, say), has
// no webhook trigger, or the signature is wrong. A sender with the right
// key learns that it is wrong; nobody learns which jobs exist.
func notSigned(job string) error {
	return errs.E(errs.Unauthenticated, "webhook %s: the signature does not verify under the hook's key, or there is no approved webhook job %s", clip(job, 64), clip(job, 64))
}

// Deliver checks a webhook delivery and enqueues a run of its job with
// the body as payload. Refusals are audited (webhook.refused) with the
// precise reason; the answer says only what a sender needs: a malformed
// request (Invalid), a signature that does not verify for this hook
// (Unauthenticated, the same for a job that does not exist or does not
// take webhooks), a timestamp outside the replay window or a delivery id
// already received (PermissionDenied). Nothing refused is enqueued.
func (s *Service) Deliver(ctx context.Context, req *contractualv1.DeliverRequest) (*contractualv1.DeliverResponse, error) {
	id := req.GetJobId()
	ev := &contractualv1.AuditEvent{Service: service, Action: actionWebhookRefused}
	if jobIDRE.MatchString(id) {
		ev.Principal = "job:" + id
	}
	what := fmt.Sprintf("webhook delivery %q for job %q from %s", clip(req.GetDeliveryId(), 128), clip(id, 64), clip(req.GetSource(), 128))
	refuse := func(err error, why string) error {
		ev.Outcome = errs.KindOf(err).String()
		ev.Detail = what + ": " + why
		if aerr := s.audit(ctx, ev); aerr != nil {
			s.log.Warn("auditing a refused webhook delivery", "err", aerr)
		}
		return err
	}

	// The request's form: nothing secret is needed to check it.
	mac, payload, err := s.checkForm(req)
	if err != nil {
		return nil, refuse(err, err.Error())
	}
	s.mu.RLock()
	e := s.jobs[id]
	s.mu.RUnlock()
	switch {
	case e == nil:
		return nil, refuse(notSigned(id), "no approved job of that id")
	case e.kind != kindWebhook:
		return nil, refuse(notSigned(id), "the job's trigger is "+e.describe+", not a webhook")
	}
	secret := e.webhook.GetSecret()
	resp, err := s.deps.Broker.VerifyMac(ctx, &contractualv1.VerifyMacRequest{
		Secret: secret, Message: signedMessage(req.GetTimestamp(), req.GetDeliveryId(), req.GetBody()), Mac: mac,
	})
	switch err = rpc.FromConnect(err); {
	case errs.Is(err, errs.NotFound):
		return nil, refuse(notSigned(id), fmt.Sprintf("the broker has no secret %s, the hook's key", secret))
	case err != nil:
		return nil, refuse(errs.Wrap(errs.Unavailable, err, "webhook %s: the signature cannot be checked now; retry later", id), "checking the signature: "+err.Error())
	case !resp.GetValid():
		return nil, refuse(notSigned(id), fmt.Sprintf("the signature does not verify under secret %s", secret))
	}

	// Signed: the sender holds the key, and may learn about its clock and
	// its ids.
	now := s.clock.Now()
	unix, _ := strconv.ParseInt(req.GetTimestamp(), 10, 64)
	sent := time.Unix(unix, 0).UTC()
	window := DefaultReplayWindow
	if w := e.webhook.GetReplayWindowSeconds(); w > 0 {
		window = time.Duration(w) * time.Second
	}
	if skew := now.Sub(sent); skew > window || skew < -window {
		return nil, refuse(errs.E(errs.PermissionDenied, "webhook %s: timestamp %s is outside the replay window of %s around the server's time %s",
			id, stamp(sent), window, stamp(now)), "stale or future timestamp")
	}
	fresh, err := s.claimDelivery(ctx, id, req.GetDeliveryId(), now, sent.Add(window+time.Second))
	if err != nil {
		return nil, refuse(err, "recording the delivery: "+err.Error())
	}
	if !fresh {
		return nil, refuse(errs.E(errs.PermissionDenied, "webhook %s: delivery %s was already received", id, req.GetDeliveryId()), "a replayed delivery id")
	}
	er, err := s.deps.Queue.Enqueue(ctx, &contractualv1.EnqueueRequest{
		JobId: id, JobDigest: e.digest, Trigger: kindWebhook, ScheduledAt: timestamppb.New(sent),
		Payload: payload, DeliveryId: req.GetDeliveryId(),
	})
	if err != nil {
		// Not enqueued: the sender may send the delivery again.
		if rerr := s.releaseDelivery(context.WithoutCancel(ctx), id, req.GetDeliveryId()); rerr != nil {
			s.log.Warn("forgetting a delivery that was not enqueued", "job", id, "err", rerr)
		}
		err = rpc.FromConnect(err)
		return nil, refuse(errs.Wrap(errs.Unavailable, err, "webhook %s: the run cannot be enqueued now; retry later", id), "enqueueing: "+err.Error())
	}
	fired := s.jobEvent(e, actionFired, fmt.Sprintf("%s: %s, sent at %s, %s late, enqueued as run %s (version %s)",
		e.describe, what, stamp(sent), now.Sub(sent).Round(time.Millisecond), clip(er.GetRun().GetId(), maxShortBytes), e.digest))
	if er.GetExisted() {
		fired.Outcome = outcomeExisted
	}
	if err := s.audit(ctx, fired); err != nil {
		s.log.Warn("auditing a webhook delivery", "job", id, "err", err)
	}
	return &contractualv1.DeliverResponse{RunId: er.GetRun().GetId()}, nil
}

// checkForm checks a delivery's headers and body and returns its MAC and
// its payload.
func (s *Service) checkForm(req *contractualv1.DeliverRequest) ([]byte, *structpb.Value, error) {
	sig, ok := strings.CutPrefix(req.GetSignature(), signaturePrefix)
	mac, err := hex.DecodeString(sig)
	switch {
	case !unixRE.MatchString(req.GetTimestamp()):
		return nil, nil, errs.E(errs.Invalid, "header %s must be the time of sending in Unix seconds, not %q", HeaderTimestamp, clip(req.GetTimestamp(), 32))
	case !deliveryRE.MatchString(req.GetDeliveryId()):
		return nil, nil, errs.E(errs.Invalid, "header %s must be 1 to 128 of A-Z a-z 0-9 . _ : -", HeaderDelivery)
	case !ok || err != nil || len(mac) != sha256.Size:
		return nil, nil, errs.E(errs.Invalid, "header %s must be %s followed by the HMAC-SHA256 in 64 hex digits", HeaderSignature, signaturePrefix)
	case len(req.GetBody()) > s.opts.MaxWebhookBytes:
		return nil, nil, errs.E(errs.Invalid, "the body is %d bytes, over the %d byte limit", len(req.GetBody()), s.opts.MaxWebhookBytes)
	}
	payload := new(structpb.Value)
	if err := protojson.Unmarshal(req.GetBody(), payload); err != nil {
		return nil, nil, errs.E(errs.Invalid, "the body must be a JSON value (the run's payload): %v", err)
	}
	return mac, payload, nil
}
