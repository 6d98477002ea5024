package mcpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/invoke"
	"github.com/contractual/contractual/internal/principal"
)

// Result metadata (_meta) keys: the call's decision and contract, as
// Invoke returns them.
const (
	MetaDecision = "contractual.dev/decision_id"
	MetaContract = "contractual.dev/contract_digest"
	MetaApproval = "contractual.dev/approval_id"
)

// minWaitLeft is the least time left in a call for waiting on for an
// approval to be worth another round.
const minWaitLeft = 2 * time.Second

// toolHandler is the tools/call handler of tool name. wrapped: its input is
// the "input" argument (see mcpTool); structured: it has an output schema,
// so its result carries the output as structured content too.
func (s *Server) toolHandler(name string, wrapped, structured bool) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		c, ok := callerOf(req.Extra)
		if !ok {
			return nil, errs.E(errs.Unauthenticated, "no authenticated device")
		}
		if req.Session != nil {
			s.track(req.Session, c.Principal)
		}
		input, err := arguments(req.Params.Arguments, wrapped)
		if err != nil {
			return toolError(err), nil
		}
		if c.Bind != nil {
			ctx = c.Bind(ctx)
		}
		ctx = principal.With(ctx, c.Principal)
		ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		defer cancel()
		cl := &call{principal: c.Principal, cancel: cancel}
		s.mu.Lock()
		s.calls[cl] = struct{}{}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.calls, cl)
			s.mu.Unlock()
		}()

		// A zero wait runs an allowed call at once, and answers a call that
		// needs an approval with the pending approval, so that the agent
		// can be told where to approve it before the wait.
		ir := &contractualv1.InvokeRequest{Tool: name, Input: input, Wait: durationpb.New(0)}
		resp, err := s.cfg.Tools.Invoke(ctx, ir)
		if err != nil && ctx.Err() != nil && !errs.Is(err, errs.PermissionDenied) {
			err = errs.E(errs.DeadlineExceeded, "%s: the call did not finish in the %s a call may take", name, s.cfg.CallTimeout)
		}
		if err != nil {
			return toolError(err), nil
		}
		if p := resp.GetPendingApproval(); p != nil {
			resp, err = s.await(ctx, req, c, ir, p)
			if err != nil {
				return toolError(err), nil
			}
		}
		return s.result(resp, structured), nil
	}
}

// await waits for the owner's decision on the pending approval p of call
// ir, reporting progress meanwhile to a client that sent a progress
// token, until the call's time is up.
func (s *Server) await(ctx context.Context, req *mcp.CallToolRequest, c Caller, ir *contractualv1.InvokeRequest, p *contractualv1.CallApproval) (*contractualv1.InvokeResponse, error) {
	where := func(p *contractualv1.CallApproval) string {
		return fmt.Sprintf("%s needs the owner's one-shot approval %s of this exact call: approve it from another paired device "+
			"in the Control UI at %s%s, or with `contractual approvals approve %s`", ir.GetTool(), p.GetId(), c.BaseURL, invoke.ApprovalPath(p.GetId()), p.GetId())
	}
	tok := req.Params.GetProgressToken()
	var (
		n       float64
		current = p
	)
	progress := func(msg string) {
		if tok == nil || req.Session == nil {
			return
		}
		n++
		if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: n, Message: msg}); err != nil {
			s.log.Debug("mcp: progress", "err", err)
		}
	}
	progress("waiting: " + where(current))
	ticker := time.NewTicker(s.cfg.ProgressEvery)
	defer ticker.Stop()
	type answer struct {
		resp *contractualv1.InvokeResponse
		err  error
	}
	ir.Wait = durationpb.New(invoke.MaxWait)
	for {
		dl, _ := ctx.Deadline()
		if time.Until(dl) < minWaitLeft {
			return nil, errs.E(errs.DeadlineExceeded, "still waiting: %s; then call again with the same input", where(current))
		}
		done := make(chan answer, 1)
		go func() {
			resp, err := s.cfg.Tools.Invoke(ctx, ir)
			done <- answer{resp, err}
		}()
		var a answer
	wait:
		for {
			select {
			case a = <-done:
				break wait
			case <-ticker.C:
				progress("still waiting: " + where(current))
			}
		}
		switch {
		case a.err != nil && ctx.Err() != nil:
			return nil, errs.E(errs.DeadlineExceeded, "gave up waiting: %s; then call again with the same input", where(current))
		case a.err != nil:
			return nil, a.err
		case a.resp.GetPendingApproval() == nil:
			progress("approved: running")
			return a.resp, nil
		}
		current = a.resp.GetPendingApproval()
	}
}

// arguments is the Invoke input of a call's arguments.
func arguments(args json.RawMessage, wrapped bool) (*structpb.Value, error) {
	if len(bytes.TrimSpace(args)) == 0 || bytes.Equal(bytes.TrimSpace(args), []byte("null")) {
		args = []byte("{}")
	}
	if wrapped {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(args, &m); err != nil {
			return nil, errs.E(errs.Invalid, "the arguments are not a JSON object: %v", err)
		}
		in, ok := m[inputKey]
		if !ok || len(m) != 1 {
			return nil, errs.E(errs.Invalid, "this tool takes one argument, %q, the string it is given", inputKey)
		}
		args = in
	}
	var v structpb.Value
	if err := protojson.Unmarshal(args, &v); err != nil {
		return nil, errs.E(errs.Invalid, "the arguments are not JSON: %v", err)
	}
	return &v, nil
}

// result is the MCP result of a call's Invoke response: the output as
// text (JSON, or the tool's text), capped, and as structured content if
// the tool has an output schema and the output was not cut.
func (s *Server) result(resp *contractualv1.InvokeResponse, structured bool) *mcp.CallToolResult {
	var text []byte
	isJSON := resp.GetOutput() != nil
	if isJSON {
		var err error
		if text, err = protojson.Marshal(resp.GetOutput()); err != nil {
			return toolError(errs.Wrap(errs.Internal, err, "encoding the output"))
		}
		// protojson's output is not stable in its spacing; compact it.
		var buf bytes.Buffer
		if json.Compact(&buf, text) == nil {
			text = buf.Bytes()
		}
	} else {
		text = []byte(resp.GetOutputText())
	}
	res := &mcp.CallToolResult{Meta: mcp.Meta{MetaDecision: resp.GetDecisionId(), MetaContract: resp.GetContractDigest()}}
	body, cut := capText(text, s.cfg.MaxResultBytes)
	if cut {
		body += fmt.Sprintf("\n[truncated by Contractual: the output is %d bytes, over the %d byte cap for agents; the first %d bytes are shown]",
			len(text), s.cfg.MaxResultBytes, len(body))
	} else if structured && isJSON {
		res.StructuredContent = rawJSON(text)
	}
	res.Content = []mcp.Content{&mcp.TextContent{Text: body}}
	return res
}

// capText returns b cut to at most max bytes, at a character boundary,
// and whether it was cut.
func capText(b []byte, max int) (string, bool) {
	if len(b) <= max {
		return string(b), false
	}
	// A character cut in two is dropped.
	return strings.ToValidUTF8(string(b[:max]), ""), true
}

// toolError is the tool error (isError) an agent gets for err: what was
// refused and why, in the words of policy, the runner or the limit. An
// internal error says no more than that.
func toolError(err error) *mcp.CallToolResult {
	msg := err.Error()
	if errs.KindOf(err) == errs.Internal {
		msg = "internal error"
	}
	return &mcp.CallToolResult{
		IsError: true,
		Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("refused (%s): %s", errs.KindOf(err), msg)}},
	}
}
