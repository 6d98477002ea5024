package policy

import (
	"strings"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// TestDrift: approving a new version of a contract a job pins pauses the
// job in the approval's own step (kind contract_changed, with the
// contract's diff); resuming re-pins it — a new job version, approved by
// the resumer — and its calls run under the new contract. Revoking the
// contract pauses it (contract_revoked), and resuming is refused until a
// version of the contract is approved again.
func TestDrift(t *testing.T) {
	f := newJobFixture(t)
	v1 := f.approveJob(f.createJob(jobFile(f.textkit, f.meter, "")).GetRecord().GetDigest())
	if _, err := f.jobCall("nightly", "r1", "meter.count_vowels", goodCount); err != nil {
		t.Fatal(err)
	}

	f.now = fixed.Add(time.Hour)
	m2 := f.publish(f.count, meter(f.count, "2.0.0", "medium")).GetRecord().GetDigest()
	n := f.audit.len()
	f.approve(m2)
	if got := actions(f.audit.since(n)); got != "contract.approve ok, contract.revoke ok, job.pause ok" {
		t.Fatalf("the approval recorded %s", got)
	}
	rec := f.getJob("nightly").GetRecord()
	p := rec.GetPause()
	if rec.GetState() != jobPaused || rec.GetDigest() != v1.GetDigest() || p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_CONTRACT_CHANGED ||
		p.GetContract() != "meter" || p.GetPinnedDigest() != f.meter || p.GetApprovedDigest() != m2 || p.GetPausedBy() != ownerDevice ||
		!p.GetPausedAt().AsTime().Equal(f.now) || !strings.Contains(p.GetReason(), "contract meter "+f.meter+", which the job pins, was replaced by "+m2) {
		t.Fatalf("job after the new contract: %v", rec)
	}
	wantDiff(t, p.GetDiff(), `changed version: "1.0.0" → "2.0.0"`)
	wantDiff(t, p.GetDiff(), "narrowed tools[count_vowels].risk: low → medium")
	_, err := f.jobCall("nightly", "r2", "meter.count_vowels", goodCount)
	wantErr(t, err, errs.FailedPrecondition, "job nightly is paused (contract_changed")
	// The other step's contract did not change, but the job is paused as a
	// whole.
	_, err = f.jobCall("nightly", "r2", "textkit.slugify", `{"text": "Hello"}`)
	wantErr(t, err, errs.FailedPrecondition, "is paused")

	n = f.audit.len()
	res := f.resumeJob("nightly")
	v2 := res.GetRecord()
	if v2.GetDigest() == v1.GetDigest() || v2.GetState() != jobApproved || v2.GetDecidedBy() != ownerDevice || v2.GetCreatedBy() != ownerDevice ||
		v2.GetJob().GetSteps()[1].GetContract() != m2 || v2.GetJob().GetSteps()[0].GetContract() != f.textkit || v2.GetPause() != nil {
		t.Fatalf("resumed: %v", v2)
	}
	wantDiff(t, res.GetDiff(), "narrowed meter: tools[count_vowels].risk: low → medium")
	if got := actions(f.audit.since(n)); got != "job.resume ok, job.supersede ok" {
		t.Fatalf("the resume recorded %s", got)
	}
	if old, _ := f.s.GetJob(asOwner, &contractualv1.GetJobRequest{Digest: v1.GetDigest()}); old.GetRecord().GetState() != jobSuperseded {
		t.Fatalf("the paused version after the resume: %v", old.GetRecord())
	}
	resp, err := f.jobCall("nightly", "r2", "meter.count_vowels", goodCount)
	if err != nil || resp.GetDecision().GetVerdict() != contractualv1.Verdict_VERDICT_ALLOW || resp.GetDecision().GetContractDigest() != m2 {
		t.Fatalf("call after the resume: %v, %v", resp.GetDecision(), err)
	}

	// Revoked: paused, and no resume until a contract of that name is
	// approved again.
	if _, err := f.s.Revoke(asOwner, &contractualv1.RevokeRequest{Digest: m2, Reason: "leaks"}); err != nil {
		t.Fatal(err)
	}
	p = f.getJob("nightly").GetRecord().GetPause()
	if p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_CONTRACT_REVOKED || p.GetPinnedDigest() != m2 || p.GetApprovedDigest() != "" ||
		!strings.Contains(p.GetReason(), "was revoked by "+ownerDevice+", and no version of it is approved (leaks)") {
		t.Fatalf("pause after the revocation: %v", p)
	}
	_, err = f.s.ResumeJob(asOwner, &contractualv1.ResumeJobRequest{Id: "nightly"})
	wantErr(t, err, errs.FailedPrecondition, "step count pins contract meter "+m2+", and no contract meter is approved")
	m3 := f.approve(f.publish(f.count, meter(f.count, "3.0.0", "low")).GetRecord().GetDigest()).GetDigest()
	if v3 := f.resumeJob("nightly").GetRecord(); v3.GetJob().GetSteps()[1].GetContract() != m3 {
		t.Fatalf("resumed after the revocation: %v", v3)
	}
	if _, err := f.jobCall("nightly", "r3", "meter.count_vowels", goodCount); err != nil {
		t.Fatal(err)
	}
}

// TestDriftOnlyPinningJobs: a contract change pauses the approved jobs
// that pin it, and no other job; a paused job stays paused as it was.
func TestDriftOnlyPinningJobs(t *testing.T) {
	f := newJobFixture(t)
	f.approveJob(f.createJob(jobFile(f.textkit, f.meter, "")).GetRecord().GetDigest())
	textOnly := []byte(`name: slugs
trigger: {once: {at: "2030-06-01T00:00:00Z"}}
steps:
  - {id: slug, tool: textkit.slugify, contract: ` + f.textkit + `, input: {text: hi}}
`)
	f.approveJob(f.createJob(textOnly).GetRecord().GetDigest())
	if _, err := f.s.PauseJob(asOwner, &contractualv1.PauseJobRequest{Id: "nightly", Reason: "holiday"}); err != nil {
		t.Fatal(err)
	}
	f.approve(f.publish(f.count, meter(f.count, "2.0.0", "low")).GetRecord().GetDigest())
	if rec := f.getJob("slugs").GetRecord(); rec.GetState() != jobApproved {
		t.Fatalf("a job not pinning meter: %v", rec)
	}
	if p := f.getJob("nightly").GetRecord().GetPause(); p.GetKind() != contractualv1.PauseKind_PAUSE_KIND_OWNER {
		t.Fatalf("a paused job's pause changed: %v", p)
	}
	// Its resume still re-pins it: the pins are checked at every resume.
	if got := f.resumeJob("nightly").GetRecord().GetJob().GetSteps()[1].GetContract(); got == f.meter {
		t.Fatal("resumed on the replaced contract")
	}
}

// TestDriftNotRecorded: when the audit log cannot record a contract's
// approval, nothing happens: the contract is not approved and the job is
// not paused.
func TestDriftNotRecorded(t *testing.T) {
	f := newJobFixture(t)
	f.approveJob(f.createJob(jobFile(f.textkit, f.meter, "")).GetRecord().GetDigest())
	m2 := f.publish(f.count, meter(f.count, "2.0.0", "low")).GetRecord().GetDigest()
	f.audit.setFail(errAuditDown)
	_, err := f.s.Approve(asOwner, &contractualv1.ApproveRequest{Digest: m2})
	wantErr(t, err, errs.Unavailable)
	f.audit.setFail(nil)
	if rec := f.getJob("nightly").GetRecord(); rec.GetState() != jobApproved {
		t.Fatalf("job %v", rec)
	}
	if _, err := f.jobCall("nightly", "r1", "meter.count_vowels", goodCount); err != nil {
		t.Fatal(err)
	}
}
