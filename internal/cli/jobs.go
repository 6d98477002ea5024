package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

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
	payload := fs.String("payload", "", "the JSON the steps see as trigger.payload (run)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want a subcommand: create, list, show, approve, reject, pause, resume, delete, run, runs, run-show")
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
	case "pause", "resume", "delete", "run", "runs":
		arg, err = one("job id")
	case "run-show":
		arg, err = one("run id")
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
	case "run", "runs", "run-show":
		return runsCmd(ctx, env, c, sub, arg, *payload, lf, *asJSON)
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

// runsCmd runs a job now, lists its runs or shows one run.
func runsCmd(ctx context.Context, env *Env, c *clients, sub, arg, payload string, lf listFlags, asJSON bool) error {
	switch sub {
	case "run":
		req := &contractualv1.RunJobRequest{Id: arg}
		if payload != "" {
			req.Payload = &structpb.Value{}
			if err := protojson.Unmarshal([]byte(payload), req.Payload); err != nil {
				return usagef("--payload: not JSON: %v", err)
			}
		}
		resp, err := c.runs.RunJob(ctx, req)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(env, resp)
		}
		run := resp.GetRun()
		fmt.Fprintf(env.Stdout, "run %s of job %s: %s\nsee it with: contractual jobs run-show %s\n", run.GetId(), run.GetJobId(), runStateName(run.GetState()), run.GetId())
		return nil
	case "runs":
		all := &contractualv1.ListRunsResponse{}
		next, err := lf.each(func(tok string) (string, error) {
			resp, err := c.runs.ListRuns(ctx, &contractualv1.ListRunsRequest{JobId: arg, PageSize: lf.size(), PageToken: tok})
			all.Runs = append(all.Runs, resp.GetRuns()...)
			return resp.GetNextPageToken(), err
		})
		if err != nil {
			return err
		}
		if asJSON {
			all.NextPageToken = next
			return printJSON(env, all)
		}
		w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "RUN\tSTATE\tTRIGGER\tSCHEDULED\tDURATION\tSTEPS\tERROR")
		for _, r := range all.GetRuns() {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.GetId(), runStateName(r.GetState()), r.GetTrigger(), when(r.GetScheduledAt()),
				orNone(runDuration(r)), len(r.GetSteps()), oneLine(r.GetError()))
		}
		if err := w.Flush(); err != nil {
			return err
		}
		moreHint(env, next)
		return nil
	default: // run-show
		resp, err := c.runs.GetRun(ctx, &contractualv1.GetRunRequest{Id: arg})
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(env, resp)
		}
		printRun(env, resp.GetRun())
		return nil
	}
}

// printRun prints a run as the Control UI's run page shows it: its state,
// trigger, times and budgets used, then each step with its decision,
// input hash, idempotency key, output, error and egress.
func printRun(env *Env, r *contractualv1.JobRun) {
	w := env.Stdout
	fmt.Fprintf(w, "run %s of job %s: %s\n  version    %s\n  trigger    %s", r.GetId(), r.GetJobId(), runStateName(r.GetState()), r.GetJobDigest(), r.GetTrigger())
	if by := r.GetRequestedBy(); by != "" {
		fmt.Fprintf(w, " by %s", by)
	}
	fmt.Fprintf(w, "\n  scheduled  %s\n  started    %s\n  finished   %s", when(r.GetScheduledAt()), when(r.GetStartedAt()), when(r.GetFinishedAt()))
	if d := runDuration(r); d != "" {
		fmt.Fprintf(w, " (%s)", d)
	}
	fmt.Fprintf(w, "\n  attempt    %d\n", r.GetAttempt())
	if e := r.GetError(); e != "" {
		fmt.Fprintf(w, "  error      %s\n", e)
	}
	u := r.GetUsed()
	fmt.Fprintf(w, "  used       %d tool calls, %ds, %d egress requests, %d egress bytes, %d output bytes\n",
		u.GetToolCallsPerRun(), u.GetRunTimeSeconds(), u.GetEgressRequests(), u.GetEgressBytes(), u.GetOutputBytes())
	for _, st := range r.GetSteps() {
		fmt.Fprintf(w, "\nstep %s: %s: %s (%d attempts)\n  decision         %s\n  input hash       %s\n  idempotency key  %s\n",
			st.GetId(), st.GetTool(), strings.ToLower(strings.TrimPrefix(st.GetState().String(), "STEP_STATE_")), st.GetAttempts(),
			orNone(st.GetDecisionId()), orNone(st.GetInputHash()), orNone(st.GetIdempotencyKey()))
		if e := st.GetError(); e != "" {
			fmt.Fprintf(w, "  error            %s\n", e)
		}
		for _, eg := range st.GetEgress() {
			verdict := "sent"
			if !eg.GetAllowed() {
				verdict = "refused: " + eg.GetReason()
			}
			fmt.Fprintf(w, "  egress           %s %s %d, %d bytes, %s\n", eg.GetMethod(), eg.GetUrl(), eg.GetStatus(), eg.GetBytes(), verdict)
		}
		if out := st.GetOutput(); out != nil {
			b, _ := json.MarshalIndent(out.AsInterface(), "", "  ")
			fmt.Fprintf(w, "  output\n%s\n", indent(string(b)))
		} else if t := st.GetOutputText(); t != "" {
			fmt.Fprintf(w, "  output\n%s\n", indent(t))
		}
	}
}

// runDuration is how long a finished run took, or "".
func runDuration(r *contractualv1.JobRun) string {
	if r.GetStartedAt() == nil || r.GetFinishedAt() == nil {
		return ""
	}
	return r.GetFinishedAt().AsTime().Sub(r.GetStartedAt().AsTime()).Round(time.Millisecond).String()
}

func runStateName(s contractualv1.RunState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "RUN_STATE_"))
}

// oneLine keeps the first line of s.
func oneLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// indent indents every line of s by four spaces.
func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
