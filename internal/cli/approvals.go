package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/tailnet"
)

// approvalsCmd lists, shows and decides one-shot call approvals.
func approvalsCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("approvals", flag.ContinueOnError)
	cf.register(fs, env)
	reason := fs.String("reason", "", "why (approve, deny)")
	state := fs.String("state", "", "only approvals in this state: pending (the default), approved, denied, used or expired (list)")
	var lf listFlags
	lf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want a subcommand: list, show, approve, deny")
	}
	sub, pos := pos[0], pos[1:]
	if sub != "list" && len(pos) != 1 {
		return usagef("want one call approval id")
	}
	c, err := cf.dial(env)
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		st, err := parseCallState(*state)
		if err != nil {
			return err
		}
		page := func(tok string) (*contractualv1.ListCallApprovalsResponse, error) {
			return c.policy.ListCallApprovals(ctx, &contractualv1.ListCallApprovalsRequest{State: st, PageSize: lf.size(), PageToken: tok})
		}
		if *asJSON {
			all := &contractualv1.ListCallApprovalsResponse{}
			next, err := lf.each(func(tok string) (string, error) {
				resp, err := page(tok)
				all.Approvals = append(all.Approvals, resp.GetApprovals()...)
				return resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			all.NextPageToken = next
			return printJSON(env, all)
		}
		return lf.table(env, "ID\tTOOL\tSTATE\tASKED BY\tREQUESTED\tEXPIRES\tINPUT", func(w io.Writer, tok string) (string, error) {
			resp, err := page(tok)
			for _, a := range resp.GetApprovals() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.GetId(), a.GetTool(), callStateName(a.GetState()), a.GetPrincipal(),
					when(a.GetRequestedAt()), when(a.GetExpiresAt()), clipText(string(a.GetCanonicalInput()), 60))
			}
			return resp.GetNextPageToken(), err
		})
	case "show":
		resp, err := c.policy.GetCallApproval(ctx, &contractualv1.GetCallApprovalRequest{Id: pos[0]})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, resp)
		}
		a := resp.GetApproval()
		rec, err := c.policy.GetContract(ctx, &contractualv1.GetContractRequest{Digest: a.GetContractDigest()})
		if err != nil {
			return err
		}
		return printCallApproval(env, a, rec.GetRecord(), deviceName(ctx, c, a.GetPrincipal()))
	case "approve":
		resp, err := c.policy.ApproveCall(ctx, &contractualv1.ApproveCallRequest{Id: pos[0], Reason: *reason})
		if err != nil {
			return err
		}
		a := resp.GetApproval()
		fmt.Fprintf(env.Stdout, "call approval %s of %s for %s: approved; it may run once until %s\n", a.GetId(), a.GetTool(), a.GetPrincipal(), when(a.GetExpiresAt()))
		return nil
	case "deny":
		resp, err := c.policy.DenyCall(ctx, &contractualv1.DenyCallRequest{Id: pos[0], Reason: *reason})
		if err != nil {
			return err
		}
		a := resp.GetApproval()
		fmt.Fprintf(env.Stdout, "call approval %s of %s for %s: denied\n", a.GetId(), a.GetTool(), a.GetPrincipal())
		return nil
	}
	return usagef("unknown subcommand %q", sub)
}

// printCallApproval prints a call approval as the Control UI shows it: the
// call, who asked, the exact input, then what the contract lets it reach.
func printCallApproval(env *Env, a *contractualv1.CallApproval, rec *contractualv1.ContractRecord, device string) error {
	w := env.Stdout
	fmt.Fprintf(w, "call approval %s: %s\n", a.GetId(), callStateName(a.GetState()))
	fmt.Fprintf(w, "  tool       %s\n  asked by   %s", a.GetTool(), a.GetPrincipal())
	if device != "" {
		fmt.Fprintf(w, " (%q)", device)
	}
	if p, err := tailnet.FromProto(a.GetTailnet()); err == nil && p != nil {
		fmt.Fprintf(w, " from tailnet node %s", p)
	}
	fmt.Fprintf(w, "\n  requested  %s\n  expires    %s\n", when(a.GetRequestedAt()), when(a.GetExpiresAt()))
	if by := a.GetDecidedBy(); by != "" {
		fmt.Fprintf(w, "  decided    %s by %s", when(a.GetDecidedAt()), by)
		if r := a.GetReason(); r != "" {
			fmt.Fprintf(w, ": %q", r)
		}
		fmt.Fprintln(w)
	}
	if u := a.GetUsedBy(); u != "" {
		fmt.Fprintf(w, "  used       %s by decision %s\n", when(a.GetUsedAt()), u)
	}
	fmt.Fprintf(w, "  contract   %s\n  module     %s\n  input hash %s\n  call hash  %s\n",
		a.GetContractDigest(), a.GetModuleDigest(), a.GetInputHash(), a.GetCallHash())
	var in bytes.Buffer
	if err := json.Indent(&in, a.GetCanonicalInput(), "  ", "  "); err != nil {
		return errs.Wrap(errs.Internal, err, "printing the input")
	}
	fmt.Fprintf(w, "\nthe exact input:\n  %s\n\n", in.Bytes())
	c := rec.GetContract()
	fmt.Fprintf(w, "under %s %s (%s), which lets it:\n", c.GetName(), c.GetVersion(), stateName(rec.GetState()))
	return contract.NewCard(c).WriteText(w)
}

// deviceName is the name of the device principal p, if this device may
// list the devices and p is among the first page of them; else "".
func deviceName(ctx context.Context, c *clients, p string) string {
	id, ok := strings.CutPrefix(p, "device:")
	if !ok {
		return ""
	}
	resp, err := c.pairing.ListDevices(ctx, &contractualv1.ListDevicesRequest{PageSize: 500})
	if err != nil {
		return ""
	}
	for _, d := range resp.GetDevices() {
		if d.GetId() == id {
			return d.GetName()
		}
	}
	return ""
}

// parseCallState parses a call approval state name; "" is unspecified
// (the server lists pending ones).
func parseCallState(s string) (contractualv1.CallApprovalState, error) {
	if s == "" {
		return contractualv1.CallApprovalState_CALL_APPROVAL_STATE_UNSPECIFIED, nil
	}
	v, ok := contractualv1.CallApprovalState_value["CALL_APPROVAL_STATE_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, usagef("--state %q: want pending, approved, denied, used or expired", s)
	}
	return contractualv1.CallApprovalState(v), nil
}

// callStateName is a call approval state as a word.
func callStateName(s contractualv1.CallApprovalState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "CALL_APPROVAL_STATE_"))
}

// clipText shortens s to at most n runes for a table cell.
func clipText(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
