package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
)

// slugJob is a job that slugifies a title, pinned to the textkit contract
// digest.
func slugJob(digest string) []byte {
	return fmt.Appendf(nil, `name: titles
trigger:
  cron: {expression: "0 2 * * *", time_zone: Europe/Berlin}
steps:
  - id: slug
    tool: textkit.slugify
    contract: %s
    input: {text: {$ref: trigger.payload.title}}
bounds:
  - tool: textkit.slugify
    inputs:
      - {pointer: /text, max_length: 80}
`, digest)
}

// TestJobService: an owner device creates, approves, pauses and resumes a
// job through the gateway over HTTP (Connect and gRPC); a new approved
// version of the contract it pins pauses it, with the diff, and resuming
// re-pins it.
func TestJobService(t *testing.T) {
	s, _ := start(t)
	tok, _ := owner(t, s)
	publishApproved(t, s, tok)
	as := connect.WithInterceptors(bearer(tok))
	pol := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, as)
	jobs := contractualv1connect.NewJobServiceClient(http.DefaultClient, s.URL, as)
	grpcJobs := contractualv1connect.NewJobServiceClient(http.DefaultClient, s.URL, as, connect.WithGRPC())
	ctx := context.Background()
	list, err := pol.ListContracts(ctx, &contractualv1.ListContractsRequest{Name: "textkit"})
	if err != nil || len(list.GetRecords()) != 1 {
		t.Fatalf("contracts: %v, %v", list, err)
	}
	v1 := list.GetRecords()[0].GetDigest()

	created, err := jobs.CreateJob(ctx, &contractualv1.CreateJobRequest{Job: slugJob(v1), Filename: "titles.yaml"})
	if err != nil || created.GetRecord().GetState() != contractualv1.JobState_JOB_STATE_PENDING || !strings.Contains(created.GetCard(), "/text: at most 80 characters or elements") {
		t.Fatalf("create: %v, %v", created, err)
	}
	if !strings.HasPrefix(created.GetRecord().GetCreatedBy(), "device:") {
		t.Fatalf("created by %q", created.GetRecord().GetCreatedBy())
	}
	_, err = jobs.CreateJob(ctx, &contractualv1.CreateJobRequest{Job: []byte("name: titles\nsteps: []\n"), Filename: "titles.yaml"})
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "titles.yaml:2:8: steps: at least one step is required") {
		t.Fatalf("an invalid job: %v", err)
	}
	if _, err := grpcJobs.ApproveJob(ctx, &contractualv1.ApproveJobRequest{Digest: created.GetRecord().GetDigest(), Reason: "fine"}); err != nil {
		t.Fatal(err)
	}
	got, err := grpcJobs.GetJob(ctx, &contractualv1.GetJobRequest{Id: "titles"})
	if err != nil || got.GetRecord().GetState() != contractualv1.JobState_JOB_STATE_APPROVED {
		t.Fatalf("get over gRPC: %v, %v", got, err)
	}

	paused, err := jobs.PauseJob(ctx, &contractualv1.PauseJobRequest{Id: "titles", Reason: "travelling"})
	if err != nil || paused.GetRecord().GetState() != contractualv1.JobState_JOB_STATE_PAUSED ||
		paused.GetRecord().GetPause().GetKind() != contractualv1.PauseKind_PAUSE_KIND_OWNER {
		t.Fatalf("pause: %v, %v", paused, err)
	}
	resumed, err := jobs.ResumeJob(ctx, &contractualv1.ResumeJobRequest{Id: "titles"})
	if err != nil || resumed.GetRecord().GetState() != contractualv1.JobState_JOB_STATE_APPROVED || resumed.GetRecord().GetDigest() != created.GetRecord().GetDigest() {
		t.Fatalf("resume: %v, %v", resumed, err)
	}

	// Drift: a new textkit approved pauses the job; the pause carries the
	// diff; resuming re-pins it to the new contract.
	wasm, _ := os.ReadFile(tool("textkit", "textkit.wasm"))
	src, _ := os.ReadFile(tool("textkit", "contract.yaml"))
	pub, err := pol.Publish(ctx, &contractualv1.PublishRequest{Module: wasm, Contract: bytes.Replace(src, []byte("version: 1.0.0"), []byte("version: 1.1.0"), 1)})
	if err != nil {
		t.Fatal(err)
	}
	v2 := pub.GetRecord().GetDigest()
	if _, err := pol.Approve(ctx, &contractualv1.ApproveRequest{Digest: v2}); err != nil {
		t.Fatal(err)
	}
	got, err = jobs.GetJob(ctx, &contractualv1.GetJobRequest{Id: "titles"})
	if p := got.GetRecord().GetPause(); err != nil || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_CONTRACT_CHANGED ||
		p.GetPinnedDigest() != v1 || p.GetApprovedDigest() != v2 || len(p.GetDiff()) == 0 {
		t.Fatalf("after the new contract: %v, %v", got, err)
	}
	resumed, err = jobs.ResumeJob(ctx, &contractualv1.ResumeJobRequest{Id: "titles", Reason: "re-pin"})
	if err != nil || resumed.GetRecord().GetJob().GetSteps()[0].GetContract() != v2 || len(resumed.GetDiff()) == 0 {
		t.Fatalf("resume after drift: %v, %v", resumed, err)
	}
	all, err := jobs.ListJobs(ctx, &contractualv1.ListJobsRequest{})
	if err != nil || len(all.GetRecords()) != 1 || all.GetRecords()[0].GetDigest() != resumed.GetRecord().GetDigest() {
		t.Fatalf("list: %v, %v", all, err)
	}
	if _, err := jobs.DeleteJob(ctx, &contractualv1.DeleteJobRequest{Id: "titles"}); err != nil {
		t.Fatal(err)
	}
	if all, _ := jobs.ListJobs(ctx, &contractualv1.ListJobsRequest{}); len(all.GetRecords()) != 0 {
		t.Fatalf("list after delete: %v", all)
	}
}

// TestJobServiceScopes: reading jobs takes scope read, creating one
// publish, deciding, pausing, resuming and deleting one approve; an
// invoke-only device reaches none of it, and no device reaches the
// service-only JobInternalService.
func TestJobServiceScopes(t *testing.T) {
	s, _ := start(t)
	ownerTok, _ := owner(t, s)
	publishApproved(t, s, ownerTok)
	readTok, _ := pairScoped(t, s, ownerTok, "reader", "read")
	pubTok, _ := pairScoped(t, s, ownerTok, "publisher", "publish")
	agentTok, _ := pairScoped(t, s, ownerTok, "agent", "invoke")
	ctx := context.Background()
	client := func(tok string) contractualv1connect.JobServiceClient {
		return contractualv1connect.NewJobServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(tok)))
	}
	list, _ := contractualv1connect.NewPolicyServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(ownerTok))).
		ListContracts(ctx, &contractualv1.ListContractsRequest{Name: "textkit"})
	digest := list.GetRecords()[0].GetDigest()

	created, err := client(pubTok).CreateJob(ctx, &contractualv1.CreateJobRequest{Job: slugJob(digest)})
	if err != nil {
		t.Fatalf("a publish device creates a job: %v", err)
	}
	jd := created.GetRecord().GetDigest()
	if _, err := client(readTok).ListJobs(ctx, &contractualv1.ListJobsRequest{}); err != nil {
		t.Errorf("a read device lists jobs: %v", err)
	}
	if _, err := client(readTok).GetJob(ctx, &contractualv1.GetJobRequest{Digest: jd}); err != nil {
		t.Errorf("a read device gets a job: %v", err)
	}
	calls := []struct {
		name, scope string
		call        func(contractualv1connect.JobServiceClient) error
	}{
		{"list", "read", func(c contractualv1connect.JobServiceClient) error {
			_, err := c.ListJobs(ctx, &contractualv1.ListJobsRequest{})
			return err
		}},
		{"create", "publish", func(c contractualv1connect.JobServiceClient) error {
			_, err := c.CreateJob(ctx, &contractualv1.CreateJobRequest{Job: slugJob(digest)})
			return err
		}},
		{"approve", "approve", func(c contractualv1connect.JobServiceClient) error {
			_, err := c.ApproveJob(ctx, &contractualv1.ApproveJobRequest{Digest: jd})
			return err
		}},
		{"reject", "approve", func(c contractualv1connect.JobServiceClient) error {
			_, err := c.RejectJob(ctx, &contractualv1.RejectJobRequest{Digest: jd})
			return err
		}},
		{"pause", "approve", func(c contractualv1connect.JobServiceClient) error {
			_, err := c.PauseJob(ctx, &contractualv1.PauseJobRequest{Id: "titles"})
			return err
		}},
		{"resume", "approve", func(c contractualv1connect.JobServiceClient) error {
			_, err := c.ResumeJob(ctx, &contractualv1.ResumeJobRequest{Id: "titles"})
			return err
		}},
		{"delete", "approve", func(c contractualv1connect.JobServiceClient) error {
			_, err := c.DeleteJob(ctx, &contractualv1.DeleteJobRequest{Id: "titles"})
			return err
		}},
	}
	for _, dev := range []struct {
		name, tok, scopes string
		has               map[string]bool
	}{
		{"reader", readTok, "read", map[string]bool{"read": true}},
		{"publisher", pubTok, "publish", map[string]bool{"publish": true}},
		{"agent", agentTok, "invoke", nil},
	} {
		for _, c := range calls {
			err := c.call(client(dev.tok))
			if dev.has[c.scope] {
				continue
			}
			if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "needs scope "+c.scope) ||
				!strings.Contains(err.Error(), "has scopes "+dev.scopes) {
				t.Errorf("%s may not %s a job: got %v, want permission_denied naming scope %s", dev.name, c.name, err, c.scope)
			}
		}
	}
	// The job is still pending: nothing above changed it.
	got, err := client(ownerTok).GetJob(ctx, &contractualv1.GetJobRequest{Id: "titles"})
	if err != nil || got.GetRecord().GetState() != contractualv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("job after refused calls: %v, %v", got, err)
	}
	watch := contractualv1connect.NewJobInternalServiceClient(http.DefaultClient, s.URL, connect.WithInterceptors(bearer(ownerTok)))
	if _, err := watch.WatchJobs(ctx, &contractualv1.WatchJobsRequest{}); connect.CodeOf(err) != connect.CodePermissionDenied ||
		!strings.Contains(err.Error(), "is for services, not for devices") {
		t.Errorf("a device watching jobs: %v", err)
	}
}

// TestJobsCLI walks a job through `contractual jobs` against a real
// server: create (the card, the approve hint), approve, list, pause, show
// (why it is paused), a new contract (drift, shown with its diff), resume
// (re-pinned, with the diff accepted), delete.
func TestJobsCLI(t *testing.T) {
	s, dir := start(t)
	mustRun(t, s, dir, "contracts", "approve",
		digestIn(t, mustRun(t, s, dir, "publish", tool("textkit", "textkit.wasm"), "--contract", tool("textkit", "contract.yaml"))))
	out := mustRun(t, s, dir, "contracts", "list", "--json")
	v1 := out[strings.Index(out, "sha256:") : strings.Index(out, "sha256:")+71]
	file := filepath.Join(t.TempDir(), "titles.yaml")
	if err := os.WriteFile(file, slugJob(v1), 0o600); err != nil {
		t.Fatal(err)
	}

	out = mustRun(t, s, dir, "jobs", "create", file)
	if !strings.Contains(out, "created job titles (sha256:") || !strings.Contains(out, ": pending") ||
		!strings.Contains(out, "1. textkit.slugify (step slug), pinned to contract "+v1) || !strings.Contains(out, "approve with: contractual jobs approve sha256:") {
		t.Fatalf("jobs create:\n%s", out)
	}
	jd := out[strings.Index(out, "(sha256:")+1 : strings.Index(out, "(sha256:")+72]
	if out := mustRun(t, s, dir, "jobs", "approve", jd, "--reason", "reviewed"); strings.TrimSpace(out) != "job titles "+jd+": approved" {
		t.Fatalf("jobs approve: %q", out)
	}
	if out := mustRun(t, s, dir, "jobs", "list"); !strings.Contains(out, "titles  approved  "+jd) {
		t.Fatalf("jobs list:\n%s", out)
	}
	if out := mustRun(t, s, dir, "jobs", "pause", "titles", "--reason", "holiday"); !strings.Contains(out, "paused (owner): holiday") {
		t.Fatalf("jobs pause: %q", out)
	}
	if out := mustRun(t, s, dir, "jobs", "show", "titles"); !strings.Contains(out, "job titles: paused") || !strings.Contains(out, "(owner): holiday") {
		t.Fatalf("jobs show:\n%s", out)
	}
	mustRun(t, s, dir, "jobs", "resume", "titles")

	changed := filepath.Join(t.TempDir(), "contract.yaml")
	src, _ := os.ReadFile(tool("textkit", "contract.yaml"))
	os.WriteFile(changed, bytes.Replace(src, []byte("version: 1.0.0"), []byte("version: 1.0.1"), 1), 0o600)
	v2 := digestIn(t, mustRun(t, s, dir, "publish", tool("textkit", "textkit.wasm"), "--contract", changed))
	mustRun(t, s, dir, "contracts", "approve", v2)
	out = mustRun(t, s, dir, "jobs", "show", "titles")
	for _, want := range []string{"(contract_changed): contract textkit " + v1, "contract   textkit: pinned " + v1 + ", approved " + v2,
		"changes of the contract (resume to accept them):", `changed   version: "1.0.0" -> "1.0.1"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("jobs show after drift lacks %q:\n%s", want, out)
		}
	}
	out = mustRun(t, s, dir, "jobs", "resume", "titles", "--reason", "new version is fine")
	if !strings.Contains(out, ": approved") || strings.Contains(out, jd) || !strings.Contains(out, `textkit: version: "1.0.0" -> "1.0.1"`) {
		t.Fatalf("jobs resume after drift:\n%s", out)
	}
	mustRun(t, s, dir, "jobs", "delete", "titles")
	if out := mustRun(t, s, dir, "jobs", "list"); strings.Contains(out, "titles") {
		t.Fatalf("jobs list after delete:\n%s", out)
	}
	code, _, errOut := contractual(t, s, dir, "jobs", "approve", "nope")
	if code != 1 || !strings.Contains(errOut, "invalid") {
		t.Fatalf("approving a malformed digest: %d %s", code, errOut)
	}
}
