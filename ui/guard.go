package ui

import (
	"context"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/pairing"
)

// The UI calls the services in process, past the API's interceptor, so
// every call it makes goes through a guard that authorizes it from the
// same table, for the identity the session put in the context
// (pairing.AuthorizeContext): a browser can do in the UI exactly what its
// token could do through the API. A method the UI does not use is not
// overridden and answers Unimplemented: the guards fail closed.

// call authorizes procedure for the identity in ctx, then calls f.
func call[Req, Resp any](ctx context.Context, procedure string, f func(context.Context, *Req) (*Resp, error), req *Req) (*Resp, error) {
	if err := pairing.AuthorizeContext(ctx, procedure); err != nil {
		return nil, err
	}
	return f(ctx, req)
}

type policyGuard struct {
	contractualv1connect.UnimplementedPolicyServiceHandler
	next contractualv1connect.PolicyServiceHandler
}

func (g policyGuard) ListContracts(ctx context.Context, req *contractualv1.ListContractsRequest) (*contractualv1.ListContractsResponse, error) {
	return call(ctx, contractualv1connect.PolicyServiceListContractsProcedure, g.next.ListContracts, req)
}

func (g policyGuard) GetContract(ctx context.Context, req *contractualv1.GetContractRequest) (*contractualv1.GetContractResponse, error) {
	return call(ctx, contractualv1connect.PolicyServiceGetContractProcedure, g.next.GetContract, req)
}

func (g policyGuard) Approve(ctx context.Context, req *contractualv1.ApproveRequest) (*contractualv1.ApproveResponse, error) {
	return call(ctx, contractualv1connect.PolicyServiceApproveProcedure, g.next.Approve, req)
}

func (g policyGuard) Reject(ctx context.Context, req *contractualv1.RejectRequest) (*contractualv1.RejectResponse, error) {
	return call(ctx, contractualv1connect.PolicyServiceRejectProcedure, g.next.Reject, req)
}

func (g policyGuard) Revoke(ctx context.Context, req *contractualv1.RevokeRequest) (*contractualv1.RevokeResponse, error) {
	return call(ctx, contractualv1connect.PolicyServiceRevokeProcedure, g.next.Revoke, req)
}

type pairingGuard struct {
	contractualv1connect.UnimplementedPairingServiceHandler
	next contractualv1connect.PairingServiceHandler
}

// BeginPairing, ApproveWithSetupCode and CompletePairing are open
// procedures (how a browser gets a session): they pass unguarded, and
// pairing checks every step itself.

func (g pairingGuard) BeginPairing(ctx context.Context, req *contractualv1.BeginPairingRequest) (*contractualv1.BeginPairingResponse, error) {
	return g.next.BeginPairing(ctx, req)
}

func (g pairingGuard) ApproveWithSetupCode(ctx context.Context, req *contractualv1.ApproveWithSetupCodeRequest) (*contractualv1.ApproveWithSetupCodeResponse, error) {
	return g.next.ApproveWithSetupCode(ctx, req)
}

func (g pairingGuard) CompletePairing(ctx context.Context, req *contractualv1.CompletePairingRequest) (*contractualv1.CompletePairingResponse, error) {
	return g.next.CompletePairing(ctx, req)
}

func (g pairingGuard) ApprovePairing(ctx context.Context, req *contractualv1.ApprovePairingRequest) (*contractualv1.ApprovePairingResponse, error) {
	return call(ctx, contractualv1connect.PairingServiceApprovePairingProcedure, g.next.ApprovePairing, req)
}

func (g pairingGuard) RejectPairing(ctx context.Context, req *contractualv1.RejectPairingRequest) (*contractualv1.RejectPairingResponse, error) {
	return call(ctx, contractualv1connect.PairingServiceRejectPairingProcedure, g.next.RejectPairing, req)
}

func (g pairingGuard) ListPairingRequests(ctx context.Context, req *contractualv1.ListPairingRequestsRequest) (*contractualv1.ListPairingRequestsResponse, error) {
	return call(ctx, contractualv1connect.PairingServiceListPairingRequestsProcedure, g.next.ListPairingRequests, req)
}

func (g pairingGuard) ListDevices(ctx context.Context, req *contractualv1.ListDevicesRequest) (*contractualv1.ListDevicesResponse, error) {
	return call(ctx, contractualv1connect.PairingServiceListDevicesProcedure, g.next.ListDevices, req)
}

func (g pairingGuard) RevokeDevice(ctx context.Context, req *contractualv1.RevokeDeviceRequest) (*contractualv1.RevokeDeviceResponse, error) {
	return call(ctx, contractualv1connect.PairingServiceRevokeDeviceProcedure, g.next.RevokeDevice, req)
}

func (g pairingGuard) Unpair(ctx context.Context, req *contractualv1.UnpairRequest) (*contractualv1.UnpairResponse, error) {
	return call(ctx, contractualv1connect.PairingServiceUnpairProcedure, g.next.Unpair, req)
}

type brokerGuard struct {
	contractualv1connect.UnimplementedBrokerServiceHandler
	next contractualv1connect.BrokerServiceHandler
}

func (g brokerGuard) PutSecret(ctx context.Context, req *contractualv1.PutSecretRequest) (*contractualv1.PutSecretResponse, error) {
	return call(ctx, contractualv1connect.BrokerServicePutSecretProcedure, g.next.PutSecret, req)
}

func (g brokerGuard) ListSecrets(ctx context.Context, req *contractualv1.ListSecretsRequest) (*contractualv1.ListSecretsResponse, error) {
	return call(ctx, contractualv1connect.BrokerServiceListSecretsProcedure, g.next.ListSecrets, req)
}

func (g brokerGuard) DeleteSecret(ctx context.Context, req *contractualv1.DeleteSecretRequest) (*contractualv1.DeleteSecretResponse, error) {
	return call(ctx, contractualv1connect.BrokerServiceDeleteSecretProcedure, g.next.DeleteSecret, req)
}

type auditGuard struct {
	contractualv1connect.UnimplementedAuditServiceHandler
	next contractualv1connect.AuditServiceHandler
}

func (g auditGuard) Tail(ctx context.Context, req *contractualv1.TailRequest) (*contractualv1.TailResponse, error) {
	return call(ctx, contractualv1connect.AuditServiceTailProcedure, g.next.Tail, req)
}

func (g auditGuard) Verify(ctx context.Context, req *contractualv1.VerifyRequest) (*contractualv1.VerifyResponse, error) {
	return call(ctx, contractualv1connect.AuditServiceVerifyProcedure, g.next.Verify, req)
}

func (g auditGuard) CheckConsistency(ctx context.Context, req *contractualv1.CheckConsistencyRequest) (*contractualv1.CheckConsistencyResponse, error) {
	return call(ctx, contractualv1connect.AuditServiceCheckConsistencyProcedure, g.next.CheckConsistency, req)
}

func (g policyGuard) ListCallApprovals(ctx context.Context, req *contractualv1.ListCallApprovalsRequest) (*contractualv1.ListCallApprovalsResponse, error) {
	return call(ctx, contractualv1connect.PolicyServiceListCallApprovalsProcedure, g.next.ListCallApprovals, req)
}

func (g policyGuard) GetCallApproval(ctx context.Context, req *contractualv1.GetCallApprovalRequest) (*contractualv1.GetCallApprovalResponse, error) {
	return call(ctx, contractualv1connect.PolicyServiceGetCallApprovalProcedure, g.next.GetCallApproval, req)
}

func (g policyGuard) ApproveCall(ctx context.Context, req *contractualv1.ApproveCallRequest) (*contractualv1.ApproveCallResponse, error) {
	return call(ctx, contractualv1connect.PolicyServiceApproveCallProcedure, g.next.ApproveCall, req)
}

func (g policyGuard) DenyCall(ctx context.Context, req *contractualv1.DenyCallRequest) (*contractualv1.DenyCallResponse, error) {
	return call(ctx, contractualv1connect.PolicyServiceDenyCallProcedure, g.next.DenyCall, req)
}

type jobGuard struct {
	contractualv1connect.UnimplementedJobServiceHandler
	next contractualv1connect.JobServiceHandler
}

func (g jobGuard) ListJobs(ctx context.Context, req *contractualv1.ListJobsRequest) (*contractualv1.ListJobsResponse, error) {
	return call(ctx, contractualv1connect.JobServiceListJobsProcedure, g.next.ListJobs, req)
}

func (g jobGuard) GetJob(ctx context.Context, req *contractualv1.GetJobRequest) (*contractualv1.GetJobResponse, error) {
	return call(ctx, contractualv1connect.JobServiceGetJobProcedure, g.next.GetJob, req)
}

func (g jobGuard) ApproveJob(ctx context.Context, req *contractualv1.ApproveJobRequest) (*contractualv1.ApproveJobResponse, error) {
	return call(ctx, contractualv1connect.JobServiceApproveJobProcedure, g.next.ApproveJob, req)
}

func (g jobGuard) RejectJob(ctx context.Context, req *contractualv1.RejectJobRequest) (*contractualv1.RejectJobResponse, error) {
	return call(ctx, contractualv1connect.JobServiceRejectJobProcedure, g.next.RejectJob, req)
}

func (g jobGuard) PauseJob(ctx context.Context, req *contractualv1.PauseJobRequest) (*contractualv1.PauseJobResponse, error) {
	return call(ctx, contractualv1connect.JobServicePauseJobProcedure, g.next.PauseJob, req)
}

func (g jobGuard) ResumeJob(ctx context.Context, req *contractualv1.ResumeJobRequest) (*contractualv1.ResumeJobResponse, error) {
	return call(ctx, contractualv1connect.JobServiceResumeJobProcedure, g.next.ResumeJob, req)
}

func (g jobGuard) DeleteJob(ctx context.Context, req *contractualv1.DeleteJobRequest) (*contractualv1.DeleteJobResponse, error) {
	return call(ctx, contractualv1connect.JobServiceDeleteJobProcedure, g.next.DeleteJob, req)
}

type runGuard struct {
	contractualv1connect.UnimplementedJobRunServiceHandler
	next contractualv1connect.JobRunServiceHandler
}

func (g runGuard) RunJob(ctx context.Context, req *contractualv1.RunJobRequest) (*contractualv1.RunJobResponse, error) {
	return call(ctx, contractualv1connect.JobRunServiceRunJobProcedure, g.next.RunJob, req)
}

func (g runGuard) ListRuns(ctx context.Context, req *contractualv1.ListRunsRequest) (*contractualv1.ListRunsResponse, error) {
	return call(ctx, contractualv1connect.JobRunServiceListRunsProcedure, g.next.ListRuns, req)
}

func (g runGuard) GetRun(ctx context.Context, req *contractualv1.GetRunRequest) (*contractualv1.GetRunResponse, error) {
	return call(ctx, contractualv1connect.JobRunServiceGetRunProcedure, g.next.GetRun, req)
}
