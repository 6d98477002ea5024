package sandbox

import (
	"context"
	"time"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/runtime/egress"
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

// GrantsFor maps a validated contract to the grants its module runs under.
// What the contract does not state is not granted; limits the contract
// leaves at zero take DefaultLimits (a normalized contract states them all).
func GrantsFor(c *contractualv1.Contract) Grants {
	var g Grants
	caps := c.GetCapabilities()
	for _, r := range caps.GetHttp() {
		rule := egress.Rule{
			Scheme:     r.GetScheme(),
			Host:       r.GetHost(),
			Port:       uint16(r.GetPort()),
			PathPrefix: r.GetPathPrefix(),
			Methods:    append([]string(nil), r.GetMethods()...),
		}
		for _, s := range r.GetSecrets() {
			rule.Secrets = append(rule.Secrets, egress.SecretSpec{Name: s.GetName(), Header: s.GetHeader(), Format: s.GetFormat()})
		}
		g.HTTP = append(g.HTTP, rule)
	}
	if cfg := caps.GetConfig(); len(cfg) > 0 {
		g.Config = make(map[string]string, len(cfg))
		for k, v := range cfg {
			g.Config[k] = v
		}
	}
	g.Log = caps.GetLog() != nil
	if w := caps.GetWasi(); w != nil {
		g.WASI = &WASI{Clock: w.GetClock(), Random: w.GetRandom()}
	}
	l := c.GetLimits()
	g.Limits = Limits{
		MemoryBytes:       uint64(l.GetMemoryMib()) << 20,
		Timeout:           time.Duration(l.GetTimeoutMs()) * time.Millisecond,
		OutputBytes:       int64(l.GetOutputBytes()),
		HTTPRequests:      int(l.GetHttpRequests()),
		HTTPResponseBytes: int64(l.GetHttpResponseBytes()),
		LogBytes:          int64(l.GetLogBytes()),
		StdioBytes:        int64(l.GetStdioBytes()),
		HostCalls:         int(l.GetHostCalls()),
	}
	return g
}
