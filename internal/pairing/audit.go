package pairing

import (
	"context"
	"fmt"
	"strings"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// Auditor is what pairing needs from the audit service: the in-process
// service and the Connect client both satisfy it. Append must return only
// once the events are durable.
type Auditor interface {
	Append(context.Context, *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error)
}

// Audit actions pairing records. Every change is recorded inside its
// transaction, before the commit, so that an audit outage changes nothing;
// refusals are recorded after the rollback.
const (
	ActionRequest = "pairing.request" // a device asked to pair
	ActionApprove = "pairing.approve" // a request was approved (by a device or the setup code)
	ActionReject  = "pairing.reject"  // a request was rejected
	ActionPair    = "device.pair"     // a device proved possession and got its token
	ActionRevoke  = "device.revoke"   // a device's token was revoked
	// ActionAuthenticate records a valid token refused because it came
	// from another tailnet node than its device paired from.
	ActionAuthenticate = "device.authenticate"
)

// auditService is the audit events' service field.
const auditService = "gateway"

// auditTimeout bounds one audit append.
const auditTimeout = 5 * time.Second

// event returns an audit event of pairing. Details are short: names,
// codes and error messages pairing bounds itself, far below the log's cap.
func event(action, who, detail string) *contractualv1.AuditEvent {
	return &contractualv1.AuditEvent{Service: auditService, Principal: who, Action: action, Outcome: "ok", Detail: detail}
}

// record appends ev and returns only once it is durable. A failure is errs.Unavailable: the caller
// must then roll back.
func (s *Store) record(ctx context.Context, ev *contractualv1.AuditEvent) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if _, err := s.audit.Append(ctx, &contractualv1.AppendRequest{Events: []*contractualv1.AuditEvent{ev}}); err != nil {
		return errs.Wrap(errs.Unavailable, err, "pairing: the audit log cannot record %s, so nothing was done", ev.GetAction())
	}
	return nil
}

// refused records that an operation was refused with err (unless err is
// routine: a malformed argument, or a completion still awaiting approval,
// which a device polls) and returns err, or errs.Unavailable if the
// refusal could not be recorded.
func (s *Store) refused(ctx context.Context, action, who, detail string, err error) error {
	if err == nil || errs.Is(err, errs.Invalid) || errs.Is(err, errs.Unavailable) || strings.Contains(err.Error(), "awaiting approval") {
		return err
	}
	ev := event(action, who, fmt.Sprintf("%s: %v", detail, err))
	ev.Outcome = errs.KindOf(err).String()
	if aerr := s.record(ctx, ev); aerr != nil {
		return errs.E(errs.Unavailable, "%v (and the audit log cannot record the refusal: %v)", err, aerr)
	}
	return err
}
