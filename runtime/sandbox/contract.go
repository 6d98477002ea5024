package sandbox

import (
	"context"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// CallTool runs one call of tool t, a tool of the contract the module was
// loaded under, with input, the call's JSON input (already held to t's
// input schema): the module gets the input as t's input format says, and
// output that does not meet t's output schema is refused (errs.ToolFailed),
// with the result kept for the record. The runner and `contractual run`
// both call tools through here, so they accept and refuse the same calls.
func (m *Module) CallTool(ctx context.Context, t *contractualv1.Tool, input []byte, opts ...CallOption) (*Result, error) {
	in, err := contract.ModuleInput(t, input)
	if err != nil {
		return &Result{}, err
	}
	res, err := m.Call(ctx, t.GetExport(), in, opts...)
	if err != nil {
		return res, err
	}
	return res, contract.CheckOutput(t, res.Output)
}
