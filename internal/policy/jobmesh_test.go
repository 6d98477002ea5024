package policy

import (
	"context"
	"log/slog"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/mesh"
	"github.com/contractual/contractual/internal/principal"
)

// TestJobsOverTheMesh serves policy behind authz on an in-memory network
// and calls its job procedures as each service: the scheduler follows
// WatchJobs; the worker reads a job, has its calls decided for the job and
// pauses it for a budget; the gateway manages jobs only for a device; and
// each may do nothing more.
func TestJobsOverTheMesh(t *testing.T) {
	f := newJobFixture(t)
	n := mesh.NewMemory(nil)
	t.Cleanup(func() { n.Close(context.Background()) })
	if err := n.Serve(authz.Policy, f.s.Handlers(mesh.HandlerOptions(slog.New(slog.DiscardHandler))).Mux()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gateway := mesh.NewClients(n, authz.Gateway).Policy
	worker := mesh.NewClients(n, authz.Worker).Policy
	scheduler := mesh.NewClients(n, authz.Scheduler).Policy
	hc, url := n.Client(authz.Scheduler, authz.Policy)
	schedulerJobs := contractualv1connect.NewJobInternalServiceClient(hc, url, mesh.ClientOptions())
	hc, url = n.Client(authz.Gateway, authz.Policy)
	gatewayJobs := contractualv1connect.NewJobInternalServiceClient(hc, url, mesh.ClientOptions())

	device := principal.With(ctx, ownerDevice)
	created, err := gateway.CreateJob(device, &contractualv1.CreateJobRequest{Job: jobFile(f.textkit, f.meter, "")})
	if err != nil || created.GetRecord().GetCreatedBy() != ownerDevice {
		t.Fatalf("the gateway creates a job for its device: %v, %v", created, err)
	}
	if _, err := gateway.ApproveJob(device, &contractualv1.ApproveJobRequest{Digest: created.GetRecord().GetDigest()}); err != nil {
		t.Fatal(err)
	}

	w, err := schedulerJobs.WatchJobs(ctx, &contractualv1.WatchJobsRequest{})
	if err != nil || !w.GetSnapshot() || len(w.GetJobs()) != 1 || w.GetJobs()[0].GetId() != "nightly" {
		t.Fatalf("the scheduler watches jobs: %v, %v", w, err)
	}
	got, err := worker.GetJob(ctx, &contractualv1.GetJobRequest{Digest: created.GetRecord().GetDigest()})
	if err != nil || got.GetRecord().GetState() != jobApproved {
		t.Fatalf("the worker reads the job: %v, %v", got, err)
	}
	resp, err := worker.Evaluate(ctx, &contractualv1.EvaluateRequest{Tool: "meter.count_vowels", Input: []byte(goodCount), Principal: "job:nightly", RunId: "r1"})
	if err != nil || resp.GetDecision().GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW {
		t.Fatalf("the worker evaluates for the job: %v, %v", resp.GetDecision(), err)
	}
	p, err := worker.PauseJob(ctx, &contractualv1.PauseJobRequest{Id: "nightly", Kind: contractualv1.PauseKind_PAUSE_KIND_BUDGET, RunId: "r1", Step: "count", Reason: "egress bytes"})
	if err != nil || p.GetRecord().GetPause().GetPausedBy() != "service:worker" {
		t.Fatalf("the worker pauses for a budget: %v, %v", p, err)
	}

	for _, c := range []struct {
		name string
		call func() error
	}{
		{"the worker approves a job", func() error {
			_, err := worker.ApproveJob(ctx, &contractualv1.ApproveJobRequest{Digest: created.GetRecord().GetDigest()})
			return err
		}},
		{"the worker resumes a job", func() error {
			_, err := worker.ResumeJob(ctx, &contractualv1.ResumeJobRequest{Id: "nightly"})
			return err
		}},
		{"the worker evaluates for a device", func() error {
			_, err := worker.Evaluate(ctx, &contractualv1.EvaluateRequest{Tool: "textkit.slugify", Input: []byte(`{"text":"a"}`), Principal: "device:phone"})
			return err
		}},
		{"the scheduler reads a job", func() error {
			_, err := scheduler.GetJob(ctx, &contractualv1.GetJobRequest{Id: "nightly"})
			return err
		}},
		{"the scheduler evaluates for a job", func() error {
			_, err := scheduler.Evaluate(ctx, &contractualv1.EvaluateRequest{Tool: "meter.count_vowels", Input: []byte(goodCount), Principal: "job:nightly", RunId: "r2"})
			return err
		}},
		{"the gateway watches jobs", func() error {
			_, err := gatewayJobs.WatchJobs(ctx, &contractualv1.WatchJobsRequest{})
			return err
		}},
		{"the gateway pauses a job for itself", func() error {
			_, err := gateway.PauseJob(ctx, &contractualv1.PauseJobRequest{Id: "nightly"})
			return err
		}},
		{"the gateway evaluates for a job", func() error {
			_, err := gateway.Evaluate(ctx, &contractualv1.EvaluateRequest{Tool: "meter.count_vowels", Input: []byte(goodCount), Principal: "job:nightly", RunId: "r2"})
			return err
		}},
	} {
		if err := c.call(); !errs.Is(err, errs.PermissionDenied) {
			t.Errorf("%s: %v, want permission_denied", c.name, err)
		}
	}
}
