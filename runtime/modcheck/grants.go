package modcheck

import (
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/runtime/egress"
)

// Grants is everything a contract lets one module use. The zero value grants
// nothing: no HTTP, no config, no logging, no WASI, and the default limits.
type Grants struct {
	// HTTP lists the egress rules; empty means no HTTP at all.
	HTTP []egress.Rule
	// Config holds the static, non-secret values the module may read; nil or
	// empty means config is not granted.
	Config map[string]string
	// Log grants the Extism log functions.
	Log bool
	// WASI, when non-nil, grants WASI preview 1 without a filesystem, an
	// environment or stdin, with stdout and stderr captured and capped.
	WASI *WASI
	// Limits bound every call.
	Limits Limits
}

// WASI states which parts of WASI beyond the inert basics are granted.
type WASI struct {
	// Clock grants the host's real clocks and sleep; without it the module
	// sees a fixed, deterministic clock.
	Clock bool
	// Random grants random_get, served from crypto/rand.
	Random bool
}

// Limits bound one call. Zero fields take the defaults of DefaultLimits.
type Limits struct {
	// MemoryBytes caps the module's memory: its linear memory and its call
	// stack together. The call stack gets an eighth (at least 256 KiB, at
	// most 8 MiB, never more than half; StackBytes), charged per call with a
	// static estimate of the callee's frame (wasmbin.FrameSize); the linear
	// memory may grow to the rest, rounded down to 64 KiB pages
	// (MemoryPages). The Extism kernel's memory, which holds input and
	// output, is capped at MemoryBytes on its own.
	MemoryBytes uint64
	// Timeout is the wall-clock limit of one call.
	Timeout time.Duration
	// OutputBytes caps the call's output.
	OutputBytes int64
	// HTTPRequests caps the module-initiated HTTP requests per call.
	HTTPRequests int
	// HTTPResponseBytes caps each HTTP response body.
	HTTPResponseBytes int64
	// LogBytes caps the captured log messages; the rest is dropped.
	LogBytes int64
	// StdioBytes caps captured stdout and stderr, each; the rest is dropped.
	StdioBytes int64
	// HostCalls caps the capability host calls (config, log, HTTP) per call.
	HostCalls int
}

// DefaultLimits are the limits of a contract that states none.
var DefaultLimits = Limits{
	MemoryBytes:       16 << 20,
	Timeout:           time.Second,
	OutputBytes:       1 << 20,
	HTTPRequests:      8,
	HTTPResponseBytes: 1 << 20,
	LogBytes:          16 << 10,
	StdioBytes:        16 << 10,
	HostCalls:         10_000,
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	orDefault(&l.MemoryBytes, d.MemoryBytes)
	orDefault(&l.Timeout, d.Timeout)
	orDefault(&l.OutputBytes, d.OutputBytes)
	orDefault(&l.HTTPRequests, d.HTTPRequests)
	orDefault(&l.HTTPResponseBytes, d.HTTPResponseBytes)
	orDefault(&l.LogBytes, d.LogBytes)
	orDefault(&l.StdioBytes, d.StdioBytes)
	orDefault(&l.HostCalls, d.HostCalls)
	return l
}

func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
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
