package cli

import (
	"bytes"
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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// publishCmd publishes a module and its contract; it lands pending.
func publishCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	cf.register(fs, env)
	contractPath := fs.String("contract", "", "the contract file")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *contractPath == "" {
		return usagef("want one module file and --contract")
	}
	wasm, err := os.ReadFile(pos[0])
	if err != nil {
		return errs.Wrap(errs.Invalid, err, "reading module")
	}
	src, err := os.ReadFile(*contractPath)
	if err != nil {
		return errs.Wrap(errs.Invalid, err, "reading contract")
	}
	c, err := cf.dial(env)
	if err != nil {
		return err
	}
	resp, err := c.policy.Publish(ctx, &contractualv1.PublishRequest{
		Module: wasm, Contract: src, ContractFilename: filepath.Base(*contractPath),
	})
	if err != nil {
		return err
	}
	rec := resp.GetRecord()
	verb := "published"
	if resp.GetExisted() {
		verb = "already published"
	}
	fmt.Fprintf(env.Stdout, "%s %s %s (%s): %s\n", verb, rec.GetContract().GetName(), rec.GetContract().GetVersion(), rec.GetDigest(), stateName(rec.GetState()))
	if p := resp.GetPredecessor(); p != "" {
		fmt.Fprintf(env.Stdout, "changes against the approved %s:\n%s", p, formatChanges(resp.GetDiff()))
	}
	if rec.GetState() == contractualv1.ContractState_CONTRACT_STATE_PENDING {
		fmt.Fprintf(env.Stdout, "approve with: contractual contracts approve %s\n", rec.GetDigest())
	}
	return nil
}

// contractsCmd lists, shows, diffs and decides contracts.
func contractsCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("contracts", flag.ContinueOnError)
	cf.register(fs, env)
	reason := fs.String("reason", "", "why (approve, reject, revoke)")
	name := fs.String("name", "", "only contracts of this name (list)")
	prefix := fs.String("prefix", "", "only contracts whose name starts with this (list)")
	state := fs.String("state", "", "only contracts in this state: pending, approved, rejected or revoked (list)")
	toolName := fs.String("tool", "", "only contracts that provide this tool, NAME.EXPORT (list)")
	var lf listFlags
	lf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want a subcommand: list, show, diff, approve, reject, revoke")
	}
	sub, pos := pos[0], pos[1:]
	c, err := cf.dial(env)
	if err != nil {
		return err
	}
	one := func() (string, error) {
		if len(pos) != 1 {
			return "", usagef("want one contract digest")
		}
		return pos[0], nil
	}
	switch sub {
	case "list":
		st, err := parseState(*state)
		if err != nil {
			return err
		}
		all := &contractualv1.ListContractsResponse{}
		next, err := lf.each(func(tok string) (string, error) {
			resp, err := c.policy.ListContracts(ctx, &contractualv1.ListContractsRequest{
				Name: *name, NamePrefix: *prefix, State: st, Tool: *toolName, PageSize: lf.size(), PageToken: tok,
			})
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
		fmt.Fprintln(w, "NAME\tVERSION\tSTATE\tDIGEST\tPUBLISHED")
		for _, r := range all.GetRecords() {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.GetContract().GetName(), r.GetContract().GetVersion(),
				stateName(r.GetState()), r.GetDigest(), r.GetPublishedAt().AsTime().Format("2006-01-02 15:04:05"))
		}
		if err := w.Flush(); err != nil {
			return err
		}
		moreHint(env, next)
		return nil
	case "show", "diff":
		d, err := one()
		if err != nil {
			return err
		}
		resp, err := c.policy.GetContract(ctx, &contractualv1.GetContractRequest{Digest: d})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, resp)
		}
		if sub == "show" {
			if err := printCard(env, resp.GetRecord()); err != nil {
				return err
			}
		}
		if p := resp.GetPredecessor(); p != "" {
			fmt.Fprintf(env.Stdout, "changes against the approved %s:\n%s", p, formatChanges(resp.GetDiff()))
		} else if sub == "diff" {
			fmt.Fprintln(env.Stdout, "no approved predecessor: everything in it is new")
		}
		return nil
	case "approve", "reject", "revoke":
		d, err := one()
		if err != nil {
			return err
		}
		var rec *contractualv1.ContractRecord
		switch sub {
		case "approve":
			var resp *contractualv1.ApproveResponse
			resp, err = c.policy.Approve(ctx, &contractualv1.ApproveRequest{Digest: d, Reason: *reason})
			rec = resp.GetRecord()
		case "reject":
			var resp *contractualv1.RejectResponse
			resp, err = c.policy.Reject(ctx, &contractualv1.RejectRequest{Digest: d, Reason: *reason})
			rec = resp.GetRecord()
		default:
			var resp *contractualv1.RevokeResponse
			resp, err = c.policy.Revoke(ctx, &contractualv1.RevokeRequest{Digest: d, Reason: *reason})
			rec = resp.GetRecord()
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "%s %s: %s\n", rec.GetContract().GetName(), rec.GetDigest(), stateName(rec.GetState()))
		return nil
	}
	return usagef("unknown subcommand %q", sub)
}

// invokeWaitSlice is how long one Invoke of `invoke --wait` asks to wait
// (the server caps it at invoke.MaxWait); the command calls again while
// the approval is pending.
const invokeWaitSlice = 20 * time.Second

// invokeCmd calls a tool through the server.
func invokeCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("invoke", flag.ContinueOnError)
	cf.register(fs, env)
	var input inputFlags
	input.register(fs)
	asJSON := fs.Bool("json", false, "print the whole response as JSON")
	wait := fs.Bool("wait", false, "if the call needs the owner's one-shot approval, wait for it (until it is decided or expires), then run the call")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one tool (<contract name>.<export>)")
	}
	raw, err := input.read(env)
	if err != nil {
		return err
	}
	var v structpb.Value
	if err := protojson.Unmarshal(raw, &v); err != nil {
		return errs.E(errs.Invalid, "input is not JSON: %v", err)
	}
	c, err := cf.dial(env)
	if err != nil {
		return err
	}
	req := &contractualv1.InvokeRequest{Tool: pos[0], Input: &v}
	if *wait {
		req.Wait = durationpb.New(0) // the first call tells at once
	}
	var resp *contractualv1.InvokeResponse
	for asked := ""; ; {
		if resp, err = c.tools.Invoke(ctx, req); err != nil {
			return err
		}
		a := resp.GetPendingApproval()
		if a == nil {
			break
		}
		if a.GetId() != asked {
			asked = a.GetId()
			fmt.Fprintf(env.Stderr, "waiting for the owner's one-shot approval %s of this exact call (until %s): approve it from another paired device in the Control UI at %s/ui/approvals/%s, or with `contractual approvals approve %s`\n",
				a.GetId(), when(a.GetExpiresAt()), strings.TrimSuffix(cf.server, "/"), a.GetId(), a.GetId())
		}
		req.Wait = durationpb.New(invokeWaitSlice)
	}
	if *asJSON {
		return printJSON(env, resp)
	}
	if resp.GetOutput() != nil {
		// protojson varies its whitespace on purpose; print compact JSON.
		b, _ := protojson.Marshal(resp.GetOutput())
		var out bytes.Buffer
		if err := json.Compact(&out, b); err != nil {
			return errs.Wrap(errs.Internal, err, "printing the output")
		}
		fmt.Fprintf(env.Stdout, "%s\n", out.Bytes())
	} else {
		fmt.Fprintln(env.Stdout, resp.GetOutputText())
	}
	for _, e := range resp.GetEgress() {
		fmt.Fprintf(env.Stderr, "egress: %s %s -> %d, %d bytes\n", e.GetMethod(), e.GetUrl(), e.GetStatus(), e.GetBytes())
	}
	return nil
}

// printCard prints a contract as the Control UI shows it: who and what,
// then its permissions card in words.
func printCard(env *Env, rec *contractualv1.ContractRecord) error {
	c := rec.GetContract()
	w := env.Stdout
	fmt.Fprintf(w, "%s %s: %s\n", c.GetName(), c.GetVersion(), stateName(rec.GetState()))
	if d := c.GetDescription(); d != "" {
		fmt.Fprintf(w, "  %s\n", d)
	}
	fmt.Fprintf(w, "  publisher  %s\n  contract   %s\n  module     %s\n", c.GetPublisher(), rec.GetDigest(), c.GetModule())
	fmt.Fprintf(w, "  published  %s by %s\n", when(rec.GetPublishedAt()), rec.GetPublishedBy())
	if by := rec.GetDecidedBy(); by != "" {
		fmt.Fprintf(w, "  %-10s %s by %s", stateName(rec.GetState()), when(rec.GetDecidedAt()), by)
		if r := rec.GetReason(); r != "" {
			fmt.Fprintf(w, ": %q", r)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	return contract.NewCard(c).WriteText(w)
}

// when formats a time for people, in UTC.
func when(ts *timestamppb.Timestamp) string {
	return ts.AsTime().UTC().Format("2006-01-02 15:04:05 UTC")
}

// parseState reads a contract state's name; "" is any state.
func parseState(s string) (contractualv1.ContractState, error) {
	if s == "" {
		return contractualv1.ContractState_CONTRACT_STATE_UNSPECIFIED, nil
	}
	st, ok := contractualv1.ContractState_value["CONTRACT_STATE_"+strings.ToUpper(s)]
	if !ok || st == 0 {
		return 0, usagef("--state %q: want pending, approved, rejected or revoked", s)
	}
	return contractualv1.ContractState(st), nil
}

func stateName(s contractualv1.ContractState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "CONTRACT_STATE_"))
}

func formatChanges(changes []*contractualv1.ContractChange) string {
	var b strings.Builder
	for _, c := range changes {
		fmt.Fprintf(&b, "  %-9s %s: %s -> %s\n", c.GetKind(), c.GetPath(), orNone(c.GetOld()), orNone(c.GetNew()))
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func printJSON(env *Env, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(env.Stdout, "%s\n", b)
	return err
}
