package authz

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
)

// procedures returns every procedure of Contractual's services.
func procedures(t *testing.T) []string {
	t.Helper()
	var out []string
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		if f.Package() != "contractual.v1" {
			return true
		}
		for i := range f.Services().Len() {
			sd := f.Services().Get(i)
			for j := range sd.Methods().Len() {
				out = append(out, "/"+string(sd.FullName())+"/"+string(sd.Methods().Get(j).Name()))
			}
		}
		return true
	})
	if len(out) < 30 {
		t.Fatalf("found only %d procedures", len(out))
	}
	return out
}

// TestTable checks the table against the design's "may call" column, cell
// by cell, for every procedure there is: a service may call exactly the
// procedures listed here, and nothing else.
func TestTable(t *testing.T) {
	const (
		policyDev   = "/contractual.v1.PolicyService/"
		jobDev      = "/contractual.v1.JobService/"
		policyInt   = "/contractual.v1.PolicyInternalService/"
		brokerDev   = "/contractual.v1.BrokerService/"
		brokerInt   = "/contractual.v1.BrokerInternalService/"
		auditDev    = "/contractual.v1.AuditService/"
		auditAppend = contractualv1connect.AuditInternalServiceAppendProcedure
		execute     = contractualv1connect.RunnerServiceExecuteProcedure
		runsDev     = "/contractual.v1.JobRunService/"
		sessionsDev = "/contractual.v1.SessionService/"
	)
	// want returns how caller may call proc (0: not at all).
	want := func(caller Service, proc string) how {
		isDev := strings.HasPrefix(proc, policyDev) || strings.HasPrefix(proc, jobDev) || strings.HasPrefix(proc, brokerDev) ||
			strings.HasPrefix(proc, auditDev) || strings.HasPrefix(proc, runsDev) || strings.HasPrefix(proc, sessionsDev)
		switch caller {
		case Gateway:
			switch {
			case proc == policyDev+"GetContract":
				return forOthers | own // own: the MCP endpoint's tool list
			case isDev:
				return forOthers
			case proc == policyInt+"Evaluate", proc == policyInt+"WaitCallApproval", proc == policyInt+"WatchContracts", proc == execute, proc == auditAppend,
				proc == contractualv1connect.SchedulerInternalServiceDeliverProcedure:
				return own
			}
		case Runner:
			switch proc {
			case policyDev + "GetContract", policyInt + "GetModule", policyInt + "GetVerifier", policyInt + "WatchContracts",
				brokerInt + "IssueHandle", brokerInt + "RedeemHandle", auditAppend:
				return own
			}
		case Broker:
			switch proc {
			case policyDev + "GetContract", policyInt + "GetVerifier", auditAppend:
				return own
			}
		case Policy:
			if proc == auditAppend {
				return own
			}
		case Scheduler:
			switch proc {
			case contractualv1connect.JobInternalServiceWatchJobsProcedure, contractualv1connect.WorkerInternalServiceEnqueueProcedure,
				brokerInt + "VerifyMac", auditAppend:
				return own
			}
		case Worker:
			switch proc {
			case policyInt + "Evaluate", execute, jobDev + "GetJob", jobDev + "PauseJob", auditAppend,
				contractualv1connect.EngineInternalServiceRunAgentStepProcedure:
				return own
			}
		case Engine:
			switch proc {
			case policyDev + "ListContracts", policyInt + "Evaluate", policyInt + "WaitCallApproval", execute, auditAppend:
				return own
			}
		}
		return 0
	}
	for _, caller := range Services {
		for _, proc := range procedures(t) {
			if got, w := table[caller][proc], want(caller, proc); got != w {
				t.Errorf("%s → %s: table says %d, want %d", caller, proc, got, w)
			}
		}
		for proc := range table[caller] {
			if !strings.HasPrefix(proc, "/contractual.v1.") {
				t.Errorf("%s's row names %s, not a procedure of ours", caller, proc)
			}
		}
	}
	// Devices never reach the internal services, so nothing there is
	// called for a device.
	for _, caller := range Services {
		for proc, h := range table[caller] {
			if h&forOthers != 0 && !forDevices(proc) {
				t.Errorf("%s may call %s for others, but it is for services only", caller, proc)
			}
		}
	}
}

func TestParseService(t *testing.T) {
	for id, want := range map[string]Service{
		"spiffe://contractual.internal/runner":  Runner,
		"spiffe://contractual.internal/gateway": Gateway,
		"spiffe://contractual.internal/nobody":  "",
		"spiffe://example.org/runner":           "",
		"spiffe://contractual.internal/runner/": "",
		"spiffe://contractual.internal/":        "",
		"https://contractual.internal/runner":   "",
		"":                                      "",
	} {
		got, ok := ParseService(id)
		if ok != (want != "") || got != want && want != "" {
			t.Errorf("ParseService(%q) = %q %v, want %q", id, got, ok, want)
		}
	}
	for _, s := range Services {
		if got, ok := ParseService(s.ID()); !ok || got != s {
			t.Errorf("%s does not round-trip: %q %v", s, got, ok)
		}
	}
}

// TestMayActFor: each service acts for its kinds of principal only; the
// engine for sessions and for the jobs whose agent steps it runs.
func TestMayActFor(t *testing.T) {
	for _, tc := range []struct {
		peer Service
		p    string
		ok   bool
	}{
		{Gateway, "device:phone", true},
		{Gateway, "job:nightly", false},
		{Engine, "session:abc", true},
		{Engine, "job:nightly", true},
		{Engine, "device:phone", false},
		{Worker, "job:nightly", true},
		{Worker, "session:abc", false},
		{Scheduler, "job:nightly", true},
		{Runner, "job:nightly", false},
		{Policy, "device:phone", false},
	} {
		err := MayActFor(WithPeer(context.Background(), tc.peer), tc.p)
		if (err == nil) != tc.ok {
			t.Errorf("MayActFor(%s, %s) = %v, want ok %v", tc.peer, tc.p, err, tc.ok)
		}
		if err != nil && !errs.Is(err, errs.PermissionDenied) {
			t.Errorf("MayActFor(%s, %s): kind %v", tc.peer, tc.p, errs.KindOf(err))
		}
	}
	if err := MayActFor(context.Background(), "job:nightly"); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("without a peer: %v", err)
	}
}

// TestAgentStepNotForDevices: the engine's internal service is for
// services only: no device reaches it through the gateway.
func TestAgentStepNotForDevices(t *testing.T) {
	if forDevices(contractualv1connect.EngineInternalServiceRunAgentStepProcedure) {
		t.Fatal("RunAgentStep is device-facing")
	}
	if table[Gateway][contractualv1connect.EngineInternalServiceRunAgentStepProcedure] != 0 {
		t.Fatal("the gateway may call RunAgentStep")
	}
}
