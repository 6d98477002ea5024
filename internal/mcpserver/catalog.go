package mcpserver

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/encoding/protojson"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// Retry bounds of the change feed when policy cannot be reached.
const (
	followRetryMin = 100 * time.Millisecond
	followRetryMax = 5 * time.Second
)

// catalog keeps the MCP server's tools in step with the approved
// contracts, following policy's change feed (WatchContracts).
type catalog struct {
	s *Server

	mu     sync.Mutex
	byName map[string]string   // tool name → the digest of the contract it comes from
	tools  map[string][]string // contract digest → its tools' names
}

func newCatalog(s *Server) *catalog {
	return &catalog{s: s, byName: map[string]string{}, tools: map[string][]string{}}
}

// run applies the feed's answers until ctx ends, retrying with backoff
// when policy cannot be reached.
func (c *catalog) run(ctx context.Context) {
	req := &contractualv1.WatchContractsRequest{}
	retry := followRetryMin
	for ctx.Err() == nil {
		resp, err := c.s.cfg.Contracts.WatchContracts(ctx, req)
		if err == nil {
			err = c.apply(ctx, resp)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.s.log.Warn("mcp: following policy's contracts", "err", err, "retry in", retry)
			t := time.NewTimer(retry)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			retry = min(2*retry, followRetryMax)
			req = &contractualv1.WatchContractsRequest{} // start again from a snapshot
			continue
		}
		retry = followRetryMin
		req = &contractualv1.WatchContractsRequest{Epoch: resp.GetEpoch(), Revision: resp.GetRevision()}
	}
}

// apply brings the tool list in line with one answer of the feed. Only
// approved contracts have tools; a contract that stops being approved
// (revoked, superseded) takes its tools away.
func (c *catalog) apply(ctx context.Context, resp *contractualv1.WatchContractsResponse) error {
	approved := map[string]bool{} // digests approved by this answer
	var gone []string             // digests no longer approved
	c.mu.Lock()
	if resp.GetSnapshot() {
		for _, ch := range resp.GetChanges() {
			if ch.GetState() == contractualv1.ContractState_CONTRACT_STATE_APPROVED {
				approved[ch.GetDigest()] = true
			}
		}
		for d := range c.tools {
			if !approved[d] {
				gone = append(gone, d)
			}
		}
	} else {
		for _, ch := range resp.GetChanges() {
			switch ch.GetState() {
			case contractualv1.ContractState_CONTRACT_STATE_APPROVED:
				approved[ch.GetDigest()] = true
			case contractualv1.ContractState_CONTRACT_STATE_PENDING:
			default:
				delete(approved, ch.GetDigest())
				gone = append(gone, ch.GetDigest())
			}
		}
	}
	for d := range approved {
		if _, have := c.tools[d]; have {
			delete(approved, d)
		}
	}
	c.mu.Unlock()

	// Fetch the newly approved contracts first, so that a failure changes
	// nothing (the feed is read again from a snapshot).
	var added []*contractualv1.ContractRecord
	for d := range approved {
		got, err := c.s.cfg.Contracts.GetContract(ctx, &contractualv1.GetContractRequest{Digest: d})
		if errs.Is(err, errs.NotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if got.GetRecord().GetState() == contractualv1.ContractState_CONTRACT_STATE_APPROVED {
			added = append(added, got.GetRecord())
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	var removed []string
	for _, d := range gone {
		for _, name := range c.tools[d] {
			if c.byName[name] == d {
				delete(c.byName, name)
				removed = append(removed, name)
			}
		}
		delete(c.tools, d)
	}
	if len(removed) > 0 {
		c.s.mcp.RemoveTools(removed...)
	}
	for _, rec := range added {
		var names []string
		for _, t := range rec.GetContract().GetTools() {
			tool, wrapped, err := mcpTool(rec.GetContract(), t)
			if err != nil {
				c.s.log.Warn("mcp: a tool not listed", "tool", tool.Name, "contract", rec.GetDigest(), "err", err)
				continue
			}
			c.s.mcp.AddTool(tool, c.s.toolHandler(tool.Name, wrapped, t.GetOutputSchema() != nil))
			names = append(names, tool.Name)
			c.byName[tool.Name] = rec.GetDigest()
		}
		c.tools[rec.GetDigest()] = names
	}
	if len(removed)+len(added) > 0 {
		c.s.log.Info("mcp: tools changed", "removed", len(removed), "contracts added", len(added), "tools", len(c.byName))
	}
	return nil
}

// inputKey is the one argument of a tool whose contract takes a string
// (input_format string or bytes): MCP tools take JSON objects, so its
// schema is wrapped as {"input": <schema>} and the call unwraps it.
const inputKey = "input"

// mcpTool is the MCP tool of export t of contract k: named as Invoke
// names it, "<contract>.<export>" (MCP allows letters, digits, '_', '-'
// and '.', and contract and export names use no others; 63+1+64 fits the
// 128 characters), with the contract's description and schemas. wrapped
// says whether its input schema was wrapped (inputKey).
func mcpTool(k *contractualv1.Contract, t *contractualv1.Tool) (*mcp.Tool, bool, error) {
	tool := &mcp.Tool{Name: k.GetName() + "." + t.GetExport(), Description: t.GetDescription()}
	in, err := protojson.Marshal(t.GetInputSchema())
	if err != nil {
		return tool, false, errs.Wrap(errs.Invalid, err, "input schema")
	}
	var head struct {
		Type any `json:"type"`
	}
	if err := json.Unmarshal(in, &head); err != nil {
		return tool, false, errs.Wrap(errs.Invalid, err, "input schema")
	}
	wrapped := head.Type != "object"
	if wrapped {
		in, err = json.Marshal(map[string]any{
			"type":                 "object",
			"properties":           map[string]json.RawMessage{inputKey: in},
			"required":             []string{inputKey},
			"additionalProperties": false,
		})
		if err != nil {
			return tool, false, errs.Wrap(errs.Internal, err, "wrapping the input schema")
		}
	}
	tool.InputSchema = rawJSON(in)
	if o := t.GetOutputSchema(); o != nil {
		out, err := protojson.Marshal(o)
		if err != nil {
			return tool, false, errs.Wrap(errs.Invalid, err, "output schema")
		}
		tool.OutputSchema = rawJSON(out)
	}
	hint := func(b bool) *bool { return &b }
	switch t.GetRisk() {
	case contractualv1.Risk_RISK_LOW:
		tool.Annotations = &mcp.ToolAnnotations{DestructiveHint: hint(false)}
	case contractualv1.Risk_RISK_HIGH:
		tool.Annotations = &mcp.ToolAnnotations{DestructiveHint: hint(true)}
	}
	if tool.Annotations != nil {
		tool.Annotations.OpenWorldHint = hint(len(k.GetCapabilities().GetHttp()) > 0)
	}
	return tool, wrapped, nil
}
