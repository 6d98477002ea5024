package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// jobsCmd creates, lists, shows and decides jobs: the reusable contracts
// jobs run under.
func jobsCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("jobs", flag.ContinueOnError)
	cf.register(fs, env)
	reason := fs.String("reason", "", "why (approve, reject, pause, resume)")
	state := fs.String("state", "", "only jobs with a version in this state: pending, approved, paused, rejected, superseded or deleted (list)")
	var lf listFlags
	lf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want a subcommand: create, list, show, approve, reject, pause, resume, delete")
	}
	sub, pos := pos[0], pos[1:]
	one := func(what string) (string, error) {
		if len(pos) != 1 {
			return "", usagef("want one %s", what)
		}
		return pos[0], nil
	}
	var arg string
	switch sub {
	case "list":
		if len(pos) != 0 {
			return usagef("list takes no arguments")
		}
	case "create":
		arg, err = one("job file")
	case "show":
		arg, err = one("job id or version digest")
	case "approve", "reject":
		arg, err = one("job version digest")
	case "pause", "resume", "delete":
		arg, err = one("job id")
	default:
		return usagef("unknown subcommand %q", sub)
	}
	if err != nil {
		return err
	}
	c, err := cf.dial(env)
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		src, err := os.ReadFile(arg)
		if err != nil {
			return errs.Wrap(errs.Invalid, err, "reading job")
		}
		resp, err := c.jobs.CreateJob(ctx, &contractualv1.CreateJobRequest{Job: src, Filename: filepath.Base(arg)})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, resp)
		}
		rec := resp.GetRecord()
		verb := "created"
		if resp.GetExisted() {
			verb = "already created"
		}
		fmt.Fprintf(env.Stdout, "%s job %s (%s): %s\n", verb, rec.GetId(), rec.GetDigest(), jobStateName(rec.GetState()))
		if p := resp.GetPredecessor(); p != "" {
			fmt.Fprintf(env.Stdout, "changes against the approved %s:\n%s", p, formatChanges(resp.GetDiff()))
		}
		fmt.Fprintf(env.Stdout, "\n%s", resp.GetCard())
		if rec.GetState() == contractualv1.JobState_JOB_STATE_PENDING {
			fmt.Fprintf(env.Stdout, "\napprove with: contractual jobs approve %s\n", rec.GetDigest())
		}
		return nil
	case "list":
		st, err := parseJobState(*state)
		if err != nil {
			return err
		}
		all := &contractualv1.ListJobsResponse{}
		next, err := lf.each(func(tok string) (string, error) {
			resp, err := c.jobs.ListJobs(ctx, &contractualv1.ListJobsRequest{State: st, PageSize: lf.size(), PageToken: tok})
			all.Records = append(all.Records, resp.GetRecords()...)
			return resp.GetNextPageToken(), err
		})
		if err != nil {
			return err
		}
		if *asJSON {
			all.NextPageToken = next
			return printJSON(env, all)
		}
		w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tSTATE\tDIGEST\tCREATED\tPAUSED FOR")
		for _, r := range all.GetRecords() {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.GetId(), jobStateName(r.GetState()), r.GetDigest(),
				r.GetCreatedAt().AsTime().Format("2006-01-02 15:04:05"), pauseKindName(r.GetPause().GetKind()))
		}
		if err := w.Flush(); err != nil {
			return err
		}
		moreHint(env, next)
		return nil
	case "show":
		req := &contractualv1.GetJobRequest{Id: arg}
		if strings.HasPrefix(arg, "sha256:") {
			req = &contractualv1.GetJobRequest{Digest: arg}
		}
		resp, err := c.jobs.GetJob(ctx, req)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, resp)
		}
		printJob(env, resp)
		return nil
	case "approve", "reject":
		var rec *contractualv1.JobRecord
		if sub == "approve" {
			var resp *contractualv1.ApproveJobResponse
			resp, err = c.jobs.ApproveJob(ctx, &contractualv1.ApproveJobRequest{Digest: arg, Reason: *reason})
			rec = resp.GetRecord()
		} else {
			var resp *contractualv1.RejectJobResponse
			resp, err = c.jobs.RejectJob(ctx, &contractualv1.RejectJobRequest{Digest: arg, Reason: *reason})
			rec = resp.GetRecord()
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "job %s %s: %s\n", rec.GetId(), rec.GetDigest(), jobStateName(rec.GetState()))
		return nil
	case "pause":
		resp, err := c.jobs.PauseJob(ctx, &contractualv1.PauseJobRequest{Id: arg, Reason: *reason})
		if err != nil {
			return err
		}
		rec := resp.GetRecord()
		fmt.Fprintf(env.Stdout, "job %s %s: %s (%s): %s\n", rec.GetId(), rec.GetDigest(), jobStateName(rec.GetState()),
			pauseKindName(rec.GetPause().GetKind()), rec.GetPause().GetReason())
		return nil
	case "resume":
		resp, err := c.jobs.ResumeJob(ctx, &contractualv1.ResumeJobRequest{Id: arg, Reason: *reason})
		if err != nil {
			return err
		}
		rec := resp.GetRecord()
		fmt.Fprintf(env.Stdout, "job %s %s: %s\n", rec.GetId(), rec.GetDigest(), jobStateName(rec.GetState()))
		if len(resp.GetDiff()) > 0 {
			fmt.Fprintf(env.Stdout, "re-pinned to the approved contracts, accepting these changes:\n%s", formatChanges(resp.GetDiff()))
		}
		return nil
	default: // delete
		if _, err := c.jobs.DeleteJob(ctx, &contractualv1.DeleteJobRequest{Id: arg}); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "job %s: deleted\n", arg)
		return nil
	}
}

// printJob prints a job version as the Control UI shows it: its state and
// who decided it, why it is paused (with the contract's diff), its
// permissions card, its diff against the approved version and the job's
// other versions.
func printJob(env *Env, resp *contractualv1.GetJobResponse) {
	rec, w := resp.GetRecord(), env.Stdout
	fmt.Fprintf(w, "job %s: %s\n  version    %s\n  created    %s by %s\n", rec.GetId(), jobStateName(rec.GetState()),
		rec.GetDigest(), when(rec.GetCreatedAt()), rec.GetCreatedBy())
	if by := rec.GetDecidedBy(); by != "" {
		fmt.Fprintf(w, "  decided    %s by %s", when(rec.GetDecidedAt()), by)
		if r := rec.GetReason(); r != "" {
			fmt.Fprintf(w, ": %q", r)
		}
		fmt.Fprintln(w)
	}
	if p := rec.GetPause(); p != nil {
		fmt.Fprintf(w, "  paused     %s by %s (%s): %s\n", when(p.GetPausedAt()), p.GetPausedBy(), pauseKindName(p.GetKind()), p.GetReason())
		if p.GetRunId() != "" {
			fmt.Fprintf(w, "  in run     %s, step %s\n", p.GetRunId(), orNone(p.GetStep()))
		}
		if p.GetContract() != "" {
			fmt.Fprintf(w, "  contract   %s: pinned %s, approved %s\n", p.GetContract(), p.GetPinnedDigest(), orNone(p.GetApprovedDigest()))
		}
		if len(p.GetDiff()) > 0 {
			fmt.Fprintf(w, "  changes of the contract (resume to accept them):\n%s", formatChanges(p.GetDiff()))
		}
	}
	fmt.Fprintf(w, "\n%s", resp.GetCard())
	if p := resp.GetPredecessor(); p != "" {
		fmt.Fprintf(w, "\nchanges against the approved %s:\n%s", p, formatChanges(resp.GetDiff()))
	}
	if vs := resp.GetVersions(); len(vs) > 0 {
		fmt.Fprintln(w, "\nother versions:")
		for _, v := range vs {
			fmt.Fprintf(w, "  %s  %-10s  %s\n", v.GetDigest(), jobStateName(v.GetState()), when(v.GetCreatedAt()))
		}
	}
}

// parseJobState reads a job state's name; "" is any state.
func parseJobState(s string) (contractualv1.JobState, error) {
	if s == "" {
		return contractualv1.JobState_JOB_STATE_UNSPECIFIED, nil
	}
	st, ok := contractualv1.JobState_value["JOB_STATE_"+strings.ToUpper(s)]
	if !ok || st == 0 {
		return 0, usagef("--state %q: want pending, approved, paused, rejected, superseded or deleted", s)
	}
	return contractualv1.JobState(st), nil
}

func jobStateName(s contractualv1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

// pauseKindName names why a job is paused; "" if it is not.
func pauseKindName(k contractualv1.PauseKind) string {
	if k == contractualv1.PauseKind_PAUSE_KIND_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(k.String(), "PAUSE_KIND_"))
}
