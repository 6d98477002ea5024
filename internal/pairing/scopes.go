package pairing

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
)

// Scopes is a set of the rights a device token carries. The set of scopes
// is closed; each is one bit.
type Scopes uint8

// The scopes. Owner includes every other scope, and Approve includes Read
// (deciding needs seeing what is decided); see Expand.
const (
	// ScopeInvoke calls tools (ToolService.Invoke): an agent's machine.
	ScopeInvoke Scopes = 1 << iota
	// ScopeRead lists contracts, devices, pairing requests and secret
	// names, and reads and verifies the audit log.
	ScopeRead
	// ScopePublish publishes modules and contracts; they land pending.
	ScopePublish
	// ScopeApprove decides contracts, pairing requests and one-shot call
	// approvals.
	ScopeApprove
	// ScopeOwner is everything, also writing secrets and revoking devices.
	ScopeOwner

	allScopes = ScopeInvoke | ScopeRead | ScopePublish | ScopeApprove | ScopeOwner
)

// scopeNames are the scopes' names, in order of their bits.
var scopeNames = []string{"invoke", "read", "publish", "approve", "owner"}

// ScopeNames returns the names of every scope, for help texts.
func ScopeNames() []string { return slices.Clone(scopeNames) }

// ParseScopes parses scope names ("invoke", "read", ...; each may also be
// a comma-separated list). No name at all is an error: a device asks for
// at least one scope.
func ParseScopes(names ...string) (Scopes, error) {
	var s Scopes
	for _, list := range names {
		for n := range strings.SplitSeq(list, ",") {
			n = strings.ToLower(strings.TrimSpace(n))
			i := slices.Index(scopeNames, n)
			if i < 0 {
				if len(n) > 32 {
					n = n[:32] + "…"
				}
				return 0, errs.E(errs.Invalid, "pairing: unknown scope %q; the scopes are %s", n, strings.Join(scopeNames, ", "))
			}
			s |= 1 << i
		}
	}
	if s == 0 {
		return 0, errs.E(errs.Invalid, "pairing: no scope; the scopes are %s", strings.Join(scopeNames, ", "))
	}
	return s, nil
}

// parseStored parses the devices and requests tables' scope column.
func parseStored(v string) Scopes {
	s, err := ParseScopes(v)
	if err != nil {
		return 0 // unreadable: no rights
	}
	return s
}

// Names returns the names of the scopes in s, in a fixed order.
func (s Scopes) Names() []string {
	var out []string
	for i, n := range scopeNames {
		if s&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// String is the comma-separated names of s ("invoke,read"), as stored.
func (s Scopes) String() string { return strings.Join(s.Names(), ",") }

// Expand returns s with the scopes its members include: Owner includes
// every scope, Approve includes Read.
func (s Scopes) Expand() Scopes {
	if s&ScopeOwner != 0 {
		return allScopes
	}
	if s&ScopeApprove != 0 {
		s |= ScopeRead
	}
	return s
}

// Cap returns the scopes of s that grant also gives, both expanded: a
// device's scopes under a cap (an owner device capped to invoke may only
// invoke; a cap of owner caps nothing).
func (s Scopes) Cap(grant Scopes) Scopes { return s.Expand() & grant.Expand() }

// Has reports whether s, expanded, includes every scope of want.
func (s Scopes) Has(want Scopes) bool { return want&^s.Expand() == 0 }

// procedureScopes is the gateway's one authorization table for devices:
// the scope each procedure a paired device may call needs. The API's
// interceptor and the Control UI (which calls the services in process)
// both authorize from it (Authorize), so that they cannot disagree. A
// procedure absent here is for services only (policy's Evaluate, the
// runner's Execute, audit's Append, the broker's handles); 0 means any
// paired device, whatever its scopes.
var procedureScopes = map[string]Scopes{
	contractualv1connect.ToolServiceInvokeProcedure: ScopeInvoke,
	// A chat session proposes tool calls, decided and run like Invoke's;
	// a device sees and uses only the sessions it opened.
	contractualv1connect.SessionServiceOpenSessionProcedure:  ScopeInvoke,
	contractualv1connect.SessionServiceListToolsProcedure:    ScopeInvoke,
	contractualv1connect.SessionServiceSendProcedure:         ScopeInvoke,
	contractualv1connect.SessionServiceWatchSessionProcedure: ScopeInvoke,
	contractualv1connect.SessionServiceGetSessionProcedure:   ScopeInvoke,
	contractualv1connect.SessionServiceListSessionsProcedure: ScopeInvoke,
	contractualv1connect.SessionServiceCloseSessionProcedure: ScopeInvoke,
	contractualv1connect.SessionServiceGetArtifactProcedure:  ScopeInvoke,

	contractualv1connect.PolicyServiceListContractsProcedure:        ScopeRead,
	contractualv1connect.PolicyServiceGetContractProcedure:          ScopeRead,
	contractualv1connect.PolicyServiceListCallApprovalsProcedure:    ScopeRead,
	contractualv1connect.PolicyServiceGetCallApprovalProcedure:      ScopeRead,
	contractualv1connect.AuditServiceTailProcedure:                  ScopeRead,
	contractualv1connect.AuditServiceVerifyProcedure:                ScopeRead,
	contractualv1connect.AuditServiceLatestCheckpointProcedure:      ScopeRead,
	contractualv1connect.AuditServiceEntriesProcedure:               ScopeRead,
	contractualv1connect.AuditServiceCheckConsistencyProcedure:      ScopeRead,
	contractualv1connect.AuditServiceGetCheckpointProcedure:         ScopeRead,
	contractualv1connect.AuditServiceSegmentsProcedure:              ScopeRead,
	contractualv1connect.BrokerServiceListSecretsProcedure:          ScopeRead,
	contractualv1connect.PairingServiceListPairingRequestsProcedure: ScopeRead,
	contractualv1connect.PairingServiceListDevicesProcedure:         ScopeRead,
	contractualv1connect.JobRunServiceListRunsProcedure:             ScopeRead,
	contractualv1connect.JobRunServiceGetRunProcedure:               ScopeRead,
	contractualv1connect.JobServiceListJobsProcedure:                ScopeRead,
	contractualv1connect.JobServiceGetJobProcedure:                  ScopeRead,

	contractualv1connect.PolicyServicePublishProcedure: ScopePublish,
	// A job lands pending, like a published contract.
	contractualv1connect.JobServiceCreateJobProcedure: ScopePublish,

	contractualv1connect.PolicyServiceApproveProcedure:         ScopeApprove,
	contractualv1connect.PolicyServiceRejectProcedure:          ScopeApprove,
	contractualv1connect.PolicyServiceRevokeProcedure:          ScopeApprove,
	contractualv1connect.PolicyServiceApproveCallProcedure:     ScopeApprove,
	contractualv1connect.PolicyServiceDenyCallProcedure:        ScopeApprove,
	contractualv1connect.PairingServiceApprovePairingProcedure: ScopeApprove,
	contractualv1connect.PairingServiceRejectPairingProcedure:  ScopeApprove,
	// Running a job now is the owner's act, like resuming it: the run makes
	// the job's side effects happen outside its schedule under the
	// reusable contract the owner approved, and spends its budgets. An
	// agent's machine (invoke) must not set a job off.
	contractualv1connect.JobRunServiceRunJobProcedure: ScopeApprove,
	// Deciding a job is deciding a reusable contract; resuming one is a
	// fresh approval; pausing and deleting one stop what was approved.
	contractualv1connect.JobServiceApproveJobProcedure: ScopeApprove,
	contractualv1connect.JobServiceRejectJobProcedure:  ScopeApprove,
	contractualv1connect.JobServicePauseJobProcedure:   ScopeApprove,
	contractualv1connect.JobServiceResumeJobProcedure:  ScopeApprove,
	contractualv1connect.JobServiceDeleteJobProcedure:  ScopeApprove,

	contractualv1connect.BrokerServicePutSecretProcedure:     ScopeOwner,
	contractualv1connect.BrokerServiceDeleteSecretProcedure:  ScopeOwner,
	contractualv1connect.BrokerServiceRotateKeyProcedure:     ScopeOwner,
	contractualv1connect.PairingServiceRevokeDeviceProcedure: ScopeOwner,
	// Recording an export lets retention drop what it covers.
	contractualv1connect.AuditServiceRecordExportProcedure: ScopeOwner,
	contractualv1connect.AuditServicePruneProcedure:        ScopeOwner,

	contractualv1connect.PairingServiceUnpairProcedure: 0,
}

// DeviceProcedures returns every procedure a paired device may call, for
// the gateway's routes.
func DeviceProcedures() []string {
	out := make([]string, 0, len(procedureScopes))
	for p := range procedureScopes {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// ProcedureScope returns the scope procedure needs (0: any paired
// device), and false if no device may call it.
func ProcedureScope(procedure string) (Scopes, bool) {
	s, ok := procedureScopes[procedure]
	return s, ok
}

// Authorize refuses (errs.PermissionDenied) a call of procedure by id
// unless procedureScopes lets a device with id's scopes call it; the
// message names the scope that is missing.
func Authorize(id Identity, procedure string) error {
	need, ok := procedureScopes[procedure]
	switch {
	case !ok:
		return errs.E(errs.PermissionDenied, "%s is for services, not for devices", procedure)
	case !id.Scopes.Has(need):
		return errs.E(errs.PermissionDenied, "%s has scopes %s, and %s needs scope %s: pair a device with scope %s (or owner) for this",
			id.Principal, orNone(id.Scopes), procedure, need, need)
	}
	return nil
}

// orNone names s, or "(none)".
func orNone(s Scopes) string {
	if s == 0 {
		return "(none)"
	}
	return s.String()
}

// Identity is who a valid device token belongs to: its principal
// ("device:<id>"), name, scopes, kind, and when it expires unless used.
type Identity struct {
	Principal string
	Name      string
	Scopes    Scopes
	Kind      Kind
	ExpiresAt time.Time
}

// identityKey is the context key of an Identity.
type identityKey struct{}

// WithIdentity returns ctx carrying id, the authenticated device a call
// is made for (see AuthorizeContext).
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity set by WithIdentity, if any.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// AuthorizeContext is Authorize for the identity ctx carries; a context
// without one is refused (errs.Unauthenticated).
func AuthorizeContext(ctx context.Context, procedure string) error {
	id, ok := IdentityFrom(ctx)
	if !ok {
		return errs.E(errs.Unauthenticated, "%s needs a paired device", procedure)
	}
	return Authorize(id, procedure)
}
