package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
)

// TestJobRunsThroughGateway: the worker runs in the all-in-one server and
// devices reach its JobRunService through the gateway with their scopes:
// reading runs needs read, running a job now needs approve; the
// scheduler's WorkerInternalService is not reachable at all.
func TestJobRunsThroughGateway(t *testing.T) {
	s, _ := start(t)
	ownerTok, _ := owner(t, s)
	agentTok, _ := pairScoped(t, s, ownerTok, "agent", "invoke")
	readerTok, _ := pairScoped(t, s, ownerTok, "dashboard", "read")
	ctx := context.Background()
	runs := func(tok string) contractualv1connect.JobRunServiceClient {
		return contractualv1connect.NewJobRunServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	}

	list, err := runs(readerTok).ListRuns(ctx, &contractualv1.ListRunsRequest{JobId: "nightly"})
	if err != nil || len(list.GetRuns()) != 0 {
		t.Fatalf("a read device lists runs: %v, %v", list, err)
	}
	if _, err := runs(readerTok).GetRun(ctx, &contractualv1.GetRunRequest{Id: "0123"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("GetRun of no run: %v, want not_found", err)
	}
	for name, c := range map[string]struct {
		call  func() error
		scope string
	}{
		"the agent lists runs": {func() error {
			_, err := runs(agentTok).ListRuns(ctx, &contractualv1.ListRunsRequest{JobId: "nightly"})
			return err
		}, "read"},
		"a read device runs a job": {func() error {
			_, err := runs(readerTok).RunJob(ctx, &contractualv1.RunJobRequest{Id: "nightly"})
			return err
		}, "approve"},
	} {
		if err := c.call(); connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "needs scope "+c.scope) {
			t.Errorf("%s: %v, want permission_denied naming scope %s", name, err, c.scope)
		}
	}
	// The owner may ask; the worker asks policy for the job, which has no
	// job of that name.
	_, err = runs(ownerTok).RunJob(ctx, &contractualv1.RunJobRequest{Id: "nightly"})
	if code := connect.CodeOf(err); code != connect.CodeNotFound && code != connect.CodeUnimplemented {
		t.Errorf("the owner runs an unknown job: %v", err)
	}
	enq := contractualv1connect.NewWorkerInternalServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(ownerTok)))
	if _, err := enq.Enqueue(ctx, &contractualv1.EnqueueRequest{JobId: "nightly"}); err == nil {
		t.Error("a device reached WorkerInternalService.Enqueue")
	}
}
