package authz

import (
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/contractual/contractual/contracts/gen/contractual/v1" // registers the services' descriptors
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
)

// how a caller may call a procedure: for itself (own), for a principal it
// names in HeaderOnBehalfOf (forOthers, which MayActFor bounds), or both.
type how uint8

const (
	own how = 1 << iota
	forOthers
)

// table is the one answer to "may this service call that procedure": the
// caller's row lists every procedure it may call and how. A procedure not
// in the row is refused, whatever else the call carries. It follows the
// design's "may call" column; no service calls the gateway.
var table = map[Service]map[string]how{
	// The gateway passes on what the owner's devices do (each for its
	// device), invokes tools (Evaluate names the device in its principal
	// field, which policy checks with MayActFor; a caller that waits for
	// the call's one-shot approval waits through WaitCallApproval; Execute
	// carries the signed decision), records pairing's events and passes
	// webhook deliveries to the scheduler. Its MCP endpoint follows the
	// approved contracts (WatchContracts) and reads each one (GetContract,
	// for itself: the tool list is the same for every device) to list
	// their tools.
	Gateway: merge(
		every(forOthers, devicesReach...),
		row(own,
			contractualv1connect.PolicyInternalServiceWatchContractsProcedure,
			contractualv1connect.PolicyServiceGetContractProcedure,
			contractualv1connect.PolicyInternalServiceEvaluateProcedure,
			contractualv1connect.PolicyInternalServiceWaitCallApprovalProcedure,
			contractualv1connect.RunnerServiceExecuteProcedure,
			contractualv1connect.AuditInternalServiceAppendProcedure,
			contractualv1connect.SchedulerInternalServiceDeliverProcedure,
		),
	),
	// The runner fetches what a decided call needs, follows the contracts'
	// changes, asks the broker for the call's secrets and records the call.
	Runner: row(own,
		contractualv1connect.PolicyServiceGetContractProcedure,
		contractualv1connect.PolicyInternalServiceGetModuleProcedure,
		contractualv1connect.PolicyInternalServiceGetVerifierProcedure,
		contractualv1connect.PolicyInternalServiceWatchContractsProcedure,
		contractualv1connect.BrokerInternalServiceIssueHandleProcedure,
		contractualv1connect.BrokerInternalServiceRedeemHandleProcedure,
		contractualv1connect.AuditInternalServiceAppendProcedure,
	),
	// The broker checks a handle's decision and contract, and records.
	Broker: row(own,
		contractualv1connect.PolicyServiceGetContractProcedure,
		contractualv1connect.PolicyInternalServiceGetVerifierProcedure,
		contractualv1connect.AuditInternalServiceAppendProcedure,
	),
	// Policy records its decisions and changes.
	Policy: row(own,
		contractualv1connect.AuditInternalServiceAppendProcedure,
	),
	// The scheduler follows the approved jobs, enqueues their runs, has
	// the broker check webhook signatures and records.
	Scheduler: row(own,
		contractualv1connect.JobInternalServiceWatchJobsProcedure,
		contractualv1connect.WorkerInternalServiceEnqueueProcedure,
		contractualv1connect.BrokerInternalServiceVerifyMacProcedure,
		contractualv1connect.AuditInternalServiceAppendProcedure,
	),
	// The worker runs jobs' steps: it asks policy to decide each call as
	// the job (Evaluate names the job in its principal field, which policy
	// checks with MayActFor), has the runner execute it, reads the job
	// version a run executes, pauses a job whose run exceeded a budget,
	// has the engine run an agent step for the job (RunAgentStep names the
	// job in its principal field, which the engine's interceptor checks
	// with MayActFor), and records runs and steps.
	Worker: row(own,
		contractualv1connect.EngineInternalServiceRunAgentStepProcedure,
		contractualv1connect.PolicyInternalServiceEvaluateProcedure,
		contractualv1connect.RunnerServiceExecuteProcedure,
		contractualv1connect.JobServiceGetJobProcedure,
		contractualv1connect.JobServicePauseJobProcedure,
		contractualv1connect.AuditInternalServiceAppendProcedure,
	),
	// The engine lists the approved tools when a session opens (and when
	// an agent step starts), asks policy to decide each proposed call for
	// the session, or for the job of an agent step (Evaluate names the
	// session or the job in its principal field, which policy checks with
	// MayActFor), waits for a session's one-shot approvals (never a job's), has the runner execute
	// allowed calls with the signed decision (the relay tool that carries
	// its model requests among them), and records every step. It reaches
	// neither the broker nor any network of its own.
	Engine: row(own,
		contractualv1connect.PolicyServiceListContractsProcedure,
		contractualv1connect.PolicyInternalServiceEvaluateProcedure,
		contractualv1connect.PolicyInternalServiceWaitCallApprovalProcedure,
		contractualv1connect.RunnerServiceExecuteProcedure,
		contractualv1connect.AuditInternalServiceAppendProcedure,
	),
	// The audit service calls no one.
}

// row returns the procedures with how.
func row(h how, procedures ...string) map[string]how {
	m := make(map[string]how, len(procedures))
	for _, p := range procedures {
		m[p] |= h
	}
	return m
}

// every returns every procedure of the named services with how.
func every(h how, services ...string) map[string]how {
	m := map[string]how{}
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			panic("authz: no service " + name)
		}
		methods := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range methods.Len() {
			m["/"+name+"/"+string(methods.Get(i).Name())] |= h
		}
	}
	return m
}

// merge returns the union of rows.
func merge(rows ...map[string]how) map[string]how {
	m := map[string]how{}
	for _, r := range rows {
		for p, h := range r {
			m[p] |= h
		}
	}
	return m
}
