package pairing

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/errs"
)

func TestParseScopes(t *testing.T) {
	for _, tt := range []struct {
		in   []string
		want Scopes
		str  string
	}{
		{[]string{"invoke"}, ScopeInvoke, "invoke"},
		{[]string{"read,invoke"}, ScopeInvoke | ScopeRead, "invoke,read"},
		{[]string{" Approve ", "publish"}, ScopePublish | ScopeApprove, "publish,approve"},
		{[]string{"owner", "owner"}, ScopeOwner, "owner"},
	} {
		got, err := ParseScopes(tt.in...)
		if err != nil || got != tt.want || got.String() != tt.str {
			t.Errorf("ParseScopes(%q) = %v (%q), %v; want %v (%q)", tt.in, got, got.String(), err, tt.want, tt.str)
		}
	}
	for _, bad := range [][]string{nil, {""}, {"admin"}, {"invoke,"}, {strings.Repeat("x", 100)}} {
		if _, err := ParseScopes(bad...); !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "invoke, read, publish, approve, owner") {
			t.Errorf("ParseScopes(%q) = %v, want invalid naming the scopes", bad, err)
		}
	}
}

func TestScopesHas(t *testing.T) {
	for _, tt := range []struct {
		held, want Scopes
		ok         bool
	}{
		{ScopeOwner, allScopes, true},
		{ScopeApprove, ScopeRead | ScopeApprove, true},
		{ScopeApprove, ScopeInvoke, false},
		{ScopeApprove, ScopeOwner, false},
		{ScopeInvoke, ScopeRead, false},
		{ScopeRead, ScopeApprove, false},
		{ScopeInvoke | ScopePublish, ScopePublish, true},
		{ScopeInvoke, 0, true},
		{0, ScopeInvoke, false},
	} {
		if got := tt.held.Has(tt.want); got != tt.ok {
			t.Errorf("%v.Has(%v) = %v, want %v", tt.held, tt.want, got, tt.ok)
		}
	}
}

// openProcedures and serviceProcedures are every procedure that the
// authorization table leaves out on purpose: the ones that need no token
// (the gateway serves them open) and the ones for services only.
var (
	openProcedures = []string{
		contractualv1connect.PairingServiceBeginPairingProcedure,
		contractualv1connect.PairingServiceApproveWithSetupCodeProcedure,
		contractualv1connect.PairingServiceCompletePairingProcedure,
	}
	serviceProcedures = []string{
		contractualv1connect.PolicyInternalServiceEvaluateProcedure,
		contractualv1connect.PolicyInternalServiceGetModuleProcedure,
		contractualv1connect.PolicyInternalServiceGetVerifierProcedure,
		contractualv1connect.PolicyInternalServiceWatchContractsProcedure,
		contractualv1connect.JobInternalServiceWatchJobsProcedure,
		contractualv1connect.WorkerInternalServiceEnqueueProcedure,
		contractualv1connect.PolicyInternalServiceWaitCallApprovalProcedure,
		contractualv1connect.RunnerServiceExecuteProcedure,
		contractualv1connect.AuditInternalServiceAppendProcedure,
		contractualv1connect.BrokerInternalServiceIssueHandleProcedure,
		contractualv1connect.BrokerInternalServiceRedeemHandleProcedure,
		contractualv1connect.BrokerInternalServiceVerifyMacProcedure,
		contractualv1connect.SchedulerInternalServiceDeliverProcedure,
		contractualv1connect.WorkerInternalServiceEnqueueProcedure,
		contractualv1connect.EngineInternalServiceRunAgentStepProcedure,
	}
)

// TestEveryProcedureClassified: every procedure of every contractual.v1
// service is in the authorization table, or named above as open or for
// services only; a new procedure fails here until it is given a scope.
func TestEveryProcedureClassified(t *testing.T) {
	known := map[string]string{}
	for _, p := range openProcedures {
		known[p] = "open"
	}
	for _, p := range serviceProcedures {
		known[p] = "service"
	}
	for p := range procedureScopes {
		if known[p] != "" {
			t.Errorf("%s is in the table and also %s", p, known[p])
		}
		known[p] = "device"
	}
	seen := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("contractual.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				p := "/" + string(svc.FullName()) + "/" + string(svc.Methods().Get(j).Name())
				seen++
				if known[p] == "" {
					t.Errorf("procedure %s has no scope in procedureScopes and is not listed as open or for services", p)
				}
				delete(known, p)
			}
		}
		return true
	})
	if seen < 25 {
		t.Fatalf("saw only %d procedures: the descriptors are not all registered", seen)
	}
	for p := range known {
		t.Errorf("%s is classified but no service has it", p)
	}
}

// TestAuthorize: an invoke-only device may call tools (and unpair itself)
// and nothing else; the refusal names the scope it lacks.
func TestAuthorize(t *testing.T) {
	agent := Identity{Principal: "device:agent", Scopes: ScopeInvoke}
	for _, p := range []string{contractualv1connect.ToolServiceInvokeProcedure, contractualv1connect.PairingServiceUnpairProcedure} {
		if err := Authorize(agent, p); err != nil {
			t.Errorf("invoke-only %s: %v", p, err)
		}
	}
	for p, need := range map[string]string{
		contractualv1connect.PolicyServiceApproveProcedure:         "approve",
		contractualv1connect.PairingServiceApprovePairingProcedure: "approve",
		contractualv1connect.BrokerServicePutSecretProcedure:       "owner",
		contractualv1connect.PairingServiceRevokeDeviceProcedure:   "owner",
		contractualv1connect.PolicyServicePublishProcedure:         "publish",
		contractualv1connect.PolicyServiceListContractsProcedure:   "read",
		contractualv1connect.AuditServiceTailProcedure:             "read",
	} {
		err := Authorize(agent, p)
		want := "device:agent has scopes invoke, and " + p + " needs scope " + need
		if !errs.Is(err, errs.PermissionDenied) || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("invoke-only %s: %v, want permission denied %q", p, err, want)
		}
	}
	err := Authorize(Identity{Principal: "device:x", Scopes: ScopeOwner}, contractualv1connect.PolicyInternalServiceEvaluateProcedure)
	wantErr(t, err, errs.PermissionDenied, contractualv1connect.PolicyInternalServiceEvaluateProcedure+" is for services, not for devices")
	// Approve includes read; owner includes everything.
	for p := range procedureScopes {
		if err := Authorize(Identity{Scopes: ScopeOwner}, p); err != nil {
			t.Errorf("owner %s: %v", p, err)
		}
	}
	if err := Authorize(Identity{Scopes: ScopeApprove}, contractualv1connect.PairingServiceListDevicesProcedure); err != nil {
		t.Errorf("approve reading: %v", err)
	}
	// Without an identity in the context: refused.
	if err := AuthorizeContext(context.Background(), contractualv1connect.ToolServiceInvokeProcedure); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("no identity: %v", err)
	}
}

// TestApproverScopes: approving grants exactly the scopes asked for, and
// only a device that holds them (and scope approve) may grant them.
func TestApproverScopes(t *testing.T) {
	f := newFixture(t, Config{})
	owner, _ := f.pairFirst()
	pairAs := func(by device, scopes Scopes) device {
		d := newDevice(t)
		r, err := f.s.Begin(f.ctx, d.pub, scopes.String(), scopes, KindClient)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.s.Approve(f.ctx, r.Code, Principal(by.id)); err != nil {
			t.Fatalf("approving %v by %s: %v", scopes, by.id, err)
		}
		tok := f.complete(d, r)
		id, err := f.s.Authenticate(f.ctx, tok, "s")
		if err != nil || id.Scopes != scopes {
			t.Fatalf("a device approved for %v authenticates with %v, %v", scopes, id.Scopes, err)
		}
		return d
	}
	agent := pairAs(owner, ScopeInvoke)
	approver := pairAs(owner, ScopeApprove)
	pairAs(approver, ScopeRead)
	pairAs(approver, ScopeApprove|ScopeRead)

	for _, tt := range []struct {
		by     device
		scopes Scopes
		msg    string
	}{
		{agent, ScopeInvoke, "pairing: device:" + agent.id + " has scopes invoke; this needs scope approve"},
		{approver, ScopeInvoke, "pairing: device:" + approver.id + " has scopes approve and may grant only those; request %s asks for invoke: approve it on a device that holds them"},
		{approver, ScopeOwner, "pairing: device:" + approver.id + " has scopes approve and may grant only those; request %s asks for owner: approve it on a device that holds them"},
	} {
		r := f.beginScopes(newDevice(t), "asks "+tt.scopes.String(), tt.scopes)
		err := f.s.Approve(f.ctx, r.Code, Principal(tt.by.id))
		wantErr(t, err, errs.PermissionDenied, strings.Replace(tt.msg, "%s", r.Code, 1))
	}
	// Rejecting needs scope approve, whatever was asked.
	r := f.beginScopes(newDevice(t), "any", ScopeOwner)
	wantErr(t, f.s.Reject(f.ctx, r.Code, Principal(agent.id)), errs.PermissionDenied,
		"pairing: device:"+agent.id+" has scopes invoke; this needs scope approve")
	if err := f.s.Reject(f.ctx, r.Code, Principal(approver.id)); err != nil {
		t.Fatalf("an approver rejecting an owner request: %v", err)
	}
	// Revoking another device needs scope owner; unpairing oneself none.
	wantErr(t, f.s.Revoke(f.ctx, approver.id, Principal(agent.id)), errs.PermissionDenied,
		"pairing: device:"+agent.id+" has scopes invoke; this needs scope owner")
	if err := f.s.Revoke(f.ctx, agent.id, Principal(agent.id)); err != nil {
		t.Fatalf("an invoke-only device unpairing itself: %v", err)
	}
}

// TestSetupCodeGrantsOwner: the device paired with the setup code is an
// owner whatever it asked for, and the audit log says so.
func TestSetupCodeGrantsOwner(t *testing.T) {
	f, log := auditedFixture(t)
	code, _, _ := f.s.SetupCode(f.ctx)
	d := newDevice(t)
	r := f.beginScopes(d, "laptop", ScopeInvoke)
	if err := f.s.ApproveWithSetupCode(f.ctx, r.Code, code); err != nil {
		t.Fatal(err)
	}
	tok, id, err := f.s.Complete(f.ctx, d.id, r.Nonce, d.sign(r.Nonce))
	if err != nil || id.Scopes != ScopeOwner {
		t.Fatalf("Complete = %+v, %v", id, err)
	}
	if a, err := f.s.Authenticate(f.ctx, tok, "s"); err != nil || a.Scopes != ScopeOwner {
		t.Fatalf("Authenticate = %+v, %v", a, err)
	}
	details := details(t, log)
	for _, want := range []string{
		"pairing.request: request " + r.Code + `, device name "laptop", client, scopes invoke`,
		"pairing.approve: request " + r.Code + " for device:" + d.id + ` ("laptop"), client, with the setup code: scope owner (it asked for invoke)`,
		`device.pair: device "laptop" paired, client, scopes owner (request ` + r.Code + ", approved by setup-code)",
	} {
		if !strings.Contains(details, want) {
			t.Errorf("audit details lack %q:\n%s", want, details)
		}
	}
}

// TestAuditDetailsNameScopes: the audit details of a request, its approval
// and the pairing name the scopes, so that the log says what was granted.
func TestAuditDetailsNameScopes(t *testing.T) {
	f, log := auditedFixture(t)
	owner, _ := f.pairFirst()
	d := newDevice(t)
	r := f.beginScopes(d, "agent box", ScopeInvoke)
	if err := f.s.Approve(f.ctx, r.Code, Principal(owner.id)); err != nil {
		t.Fatal(err)
	}
	f.complete(d, r)
	details := details(t, log)
	for _, want := range []string{
		"pairing.request: request " + r.Code + `, device name "agent box", client, scopes invoke`,
		"pairing.approve: request " + r.Code + " for device:" + d.id + ` ("agent box"), client, scopes invoke`,
		`device.pair: device "agent box" paired, client, scopes invoke`,
	} {
		if !strings.Contains(details, want) {
			t.Errorf("audit details lack %q:\n%s", want, details)
		}
	}
}

// details returns "action: detail" of every event in log, one a line.
func details(t *testing.T, log *audit.Service) string {
	t.Helper()
	resp, err := log.Tail(context.Background(), &contractualv1.TailRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range resp.GetEvents() {
		b.WriteString(e.GetAction() + ": " + e.GetDetail() + "\n")
	}
	return b.String()
}
