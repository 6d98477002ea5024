package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/fairq"
	"github.com/contractual/contractual/runtime/modcheck"
	"github.com/contractual/contractual/runtime/secretscan"
)

// LogEntry is one message a module logged.
type LogEntry struct {
	Level   string `json:"level"`
	Message string `json:"message"`
}

// call is the state of one call, reachable from host functions through the
// context wazero passes them.
type call struct {
	// ctx is the call's context, for host functions that block (HTTP).
	ctx       context.Context
	limits    Limits
	grants    *Grants
	k         *kernel
	hostCalls int
	// violation is the first limit or policy breach; the call fails with it.
	violation error
	// ticks counts the metered guest's ticks (meter.go).
	ticks int

	// slot is the call's CPU slot (sched.go). yield, if set, gives it to a
	// waiting call of another flow once this one has run for a quantum, and
	// returns when the call has a slot again; it fails if the call ends
	// first. Every interruption point of the guest calls it: each tick of
	// the metered guest and each capability host call. waitErr maps an
	// error of waiting for the slot to the call's.
	slot    *fairq.Slot
	yield   func(context.Context) error
	waitErr func(error) error

	egress     *egress.Session
	lastStatus int32
	lastHeader http.Header

	vars     map[string][]byte
	varBytes int

	logs        []LogEntry
	logBytes    int64
	logsDropped int
}

type callKey struct{}

func callFrom(ctx context.Context) *call {
	c, ok := ctx.Value(callKey{}).(*call)
	if !ok {
		// Only Module.Call runs guest code, and it always sets the key.
		panic("sandbox: host function called outside Module.Call")
	}
	return c
}

// abort ends the call with err: the first breach is the one reported, and the
// panic unwinds the guest (wazero turns a host panic into a call error).
func (c *call) abort(err error) {
	if c.violation == nil {
		c.violation = err
	}
	panic(err)
}

// enter counts one capability host call against the limit.
func (c *call) enter(fn string) {
	c.hostCalls++
	if c.hostCalls > c.limits.HostCalls {
		c.abort(errs.E(errs.ResourceExhausted,
			"module exceeded the limit of %d host calls per call (at %s)", c.limits.HostCalls, fn))
	}
	if c.yield != nil {
		if err := c.yield(c.ctx); err != nil {
			c.abort(err)
		}
	}
}

// write copies b into a new kernel block and returns its offset.
func (c *call) write(fn string, b []byte) uint64 {
	off := c.k.alloc(uint64(len(b)))
	if off == 0 && len(b) > 0 {
		c.abort(errs.E(errs.ResourceExhausted, "%s: no memory left for %d bytes (memory limit %d MiB)",
			fn, len(b), c.limits.MemoryBytes>>20))
	}
	copy(c.k.mem[off:], b)
	return off
}

// maxVarBytes caps the vars of one call, keys and values together.
const maxVarBytes = 1 << 20

// hostModule defines modcheck.ExtismEnv, the Extism kernel functions, and
// the capability functions under capabilityEnv. Every function is defined;
// modcheck.CheckImports keeps a module from importing one its grants do not
// cover.
func hostModule(ctx context.Context, rt wazero.Runtime) error {
	kb := rt.NewHostModuleBuilder(modcheck.ExtismEnv)
	fn := func(b wazero.HostModuleBuilder, name string, f func(*call, []uint64), params, results []api.ValueType) {
		b.NewFunctionBuilder().
			WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
				f(callFrom(ctx), stack)
			}), params, results).
			Export(name)
	}
	I64, I32 := api.ValueTypeI64, api.ValueTypeI32
	p := func(t ...api.ValueType) []api.ValueType { return t }

	fn(kb, "alloc", func(c *call, s []uint64) { s[0] = c.k.alloc(s[0]) }, p(I64), p(I64))
	fn(kb, "free", func(c *call, s []uint64) { c.k.free(s[0]) }, p(I64), nil)
	fn(kb, "length", func(c *call, s []uint64) { s[0] = c.k.length(s[0]) }, p(I64), p(I64))
	fn(kb, "length_unsafe", func(c *call, s []uint64) { s[0] = c.k.length(s[0]) }, p(I64), p(I64))
	fn(kb, "load_u8", func(c *call, s []uint64) { s[0] = uint64(c.k.loadU8(s[0])) }, p(I64), p(I32))
	fn(kb, "load_u64", func(c *call, s []uint64) { s[0] = c.k.loadU64(s[0]) }, p(I64), p(I64))
	fn(kb, "store_u8", func(c *call, s []uint64) { c.k.storeU8(s[0], uint32(s[1])) }, p(I64, I32), nil)
	fn(kb, "store_u64", func(c *call, s []uint64) { c.k.storeU64(s[0], s[1]) }, p(I64, I64), nil)
	fn(kb, "input_load_u8", func(c *call, s []uint64) { s[0] = uint64(c.k.inputLoadU8(s[0])) }, p(I64), p(I32))
	fn(kb, "input_load_u64", func(c *call, s []uint64) { s[0] = c.k.inputLoadU64(s[0]) }, p(I64), p(I64))
	fn(kb, "input_length", func(c *call, s []uint64) { s[0] = c.k.inputLen }, nil, p(I64))
	fn(kb, "input_offset", func(c *call, s []uint64) { s[0] = c.k.input }, nil, p(I64))
	fn(kb, "input_set", func(c *call, s []uint64) {
		c.k.span("input_set", s[0], s[1])
		c.k.input, c.k.inputLen = s[0], s[1]
	}, p(I64, I64), nil)
	fn(kb, "output_set", func(c *call, s []uint64) { c.k.setOutput(s[0], s[1]) }, p(I64, I64), nil)
	fn(kb, "output_length", func(c *call, s []uint64) { s[0] = c.k.outputLen }, nil, p(I64))
	fn(kb, "output_offset", func(c *call, s []uint64) { s[0] = c.k.output }, nil, p(I64))
	fn(kb, "reset", func(c *call, s []uint64) { c.k.reset() }, nil, nil)
	fn(kb, "error_set", func(c *call, s []uint64) { c.k.errOff = s[0] }, p(I64), nil)
	fn(kb, "error_get", func(c *call, s []uint64) { s[0] = c.k.errOff }, nil, p(I64))
	fn(kb, "memory_bytes", func(c *call, s []uint64) { s[0] = uint64(len(c.k.mem)) }, nil, p(I64))
	fn(kb, "var_get", varGet, p(I64), p(I64))
	fn(kb, "var_set", varSet, p(I64, I64), nil)
	if _, err := kb.Instantiate(ctx); err != nil {
		return err
	}

	cb := rt.NewHostModuleBuilder(capabilityEnv)
	fn(cb, "config_get", configGet, p(I64), p(I64))
	fn(cb, "http_request", httpRequest, p(I64, I64), p(I64))
	fn(cb, "http_status_code", httpStatusCode, nil, p(I32))
	fn(cb, "http_headers", httpHeaders, nil, p(I64))
	fn(cb, "get_log_level", getLogLevel, nil, p(I32))
	for _, level := range []string{"trace", "debug", "info", "warn", "error"} {
		fn(cb, "log_"+level, logAt(level), p(I64), nil)
	}
	_, err := cb.Instantiate(ctx)
	return err
}

func varGet(c *call, s []uint64) {
	v, ok := c.vars[string(c.k.bytes("var_get", s[0]))]
	if !ok {
		s[0] = 0
		return
	}
	s[0] = c.write("var_get", v)
}

func varSet(c *call, s []uint64) {
	name := string(c.k.bytes("var_set", s[0]))
	if old, ok := c.vars[name]; ok {
		c.varBytes -= len(name) + len(old)
		delete(c.vars, name)
	}
	if s[1] == 0 {
		return
	}
	v := c.k.bytes("var_set", s[1])
	if c.varBytes+len(name)+len(v) > maxVarBytes {
		c.abort(errs.E(errs.ResourceExhausted, "var_set: vars exceed %d bytes", maxVarBytes))
	}
	if c.vars == nil {
		c.vars = make(map[string][]byte)
	}
	c.vars[name] = append([]byte(nil), v...)
	c.varBytes += len(name) + len(v)
}

func configGet(c *call, s []uint64) {
	c.enter("config_get")
	value, ok := c.grants.Config[string(c.k.bytes("config_get", s[0]))]
	if !ok {
		s[0] = 0
		return
	}
	s[0] = c.write("config_get", []byte(value))
}

// extismRequest is the JSON an Extism PDK passes to http_request.
type extismRequest struct {
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Headers map[string]string `json:"headers"`
}

func httpRequest(c *call, s []uint64) {
	c.enter("http_request")
	c.lastStatus, c.lastHeader = 0, nil
	var req extismRequest
	if err := json.Unmarshal(c.k.bytes("http_request", s[0]), &req); err != nil {
		c.abort(errs.E(errs.ToolFailed, "http_request: invalid request JSON: %v", err))
	}
	var body []byte
	if s[1] != 0 {
		body = bytes.Clone(c.k.bytes("http_request", s[1]))
	}
	header := make(http.Header, len(req.Headers))
	for k, v := range req.Headers {
		header.Set(k, v)
	}
	var resp *egress.Response
	var err error
	c.outside(func() {
		resp, err = c.egress.Do(c.ctx, egress.Request{Method: req.Method, URL: req.URL, Header: header, Body: body})
	})
	if err != nil {
		c.abort(err)
	}
	// A server may echo a secret the host injected: the module gets the
	// response with every released secret redacted, in any spelling.
	if released := c.egress.Released(); len(released) > 0 {
		set := secretscan.New(released)
		resp.Body = set.RedactContext(c.ctx, resp.Body)
		for k, vs := range resp.Header {
			for i, v := range vs {
				vs[i] = string(set.RedactContext(c.ctx, []byte(v)))
			}
			resp.Header[k] = vs
		}
	}
	c.lastStatus, c.lastHeader = int32(resp.Status), resp.Header
	if len(resp.Body) == 0 {
		s[0] = 0
		return
	}
	s[0] = c.write("http_request", resp.Body)
}

func httpStatusCode(c *call, s []uint64) {
	c.enter("http_status_code")
	s[0] = api.EncodeI32(c.lastStatus)
}

func httpHeaders(c *call, s []uint64) {
	c.enter("http_headers")
	if c.lastHeader == nil {
		s[0] = 0
		return
	}
	flat := make(map[string]string, len(c.lastHeader))
	for k, v := range c.lastHeader {
		flat[strings.ToLower(k)] = strings.Join(v, ",")
	}
	b, _ := json.Marshal(flat) // a map of strings always marshals
	s[0] = c.write("http_headers", b)
}

// Extism log levels, as get_log_level reports them.
const extismLogInfo = 2

// getLogLevel tells the PDK to send everything from info up; the host caps
// what it keeps.
func getLogLevel(c *call, s []uint64) {
	c.enter("get_log_level")
	s[0] = api.EncodeI32(extismLogInfo)
}

func logAt(level string) func(*call, []uint64) {
	fn := "log_" + level
	return func(c *call, s []uint64) {
		c.enter(fn)
		c.log(level, c.k.bytes(fn, s[0]))
	}
}

// log keeps msg if it fits in what is left of the log cap, truncating the
// message that crosses it; the rest is counted and dropped.
func (c *call) log(level string, msg []byte) {
	left := c.limits.LogBytes - c.logBytes
	if left <= 0 {
		c.logsDropped++
		return
	}
	if int64(len(msg)) > left {
		msg = truncateUTF8(msg, int(left))
		c.logsDropped++
	}
	c.logBytes += int64(len(msg))
	c.logs = append(c.logs, LogEntry{Level: level, Message: strings.ToValidUTF8(string(msg), "\uFFFD")})
}

// truncateUTF8 cuts b to at most n bytes without splitting a rune.
func truncateUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return b[:n]
}

// cappedWriter keeps the first max bytes written to it and counts the rest;
// a module's flood of stdout costs it time, not the host memory.
type cappedWriter struct {
	buf     []byte
	max     int64
	dropped int64
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	keep := min(int64(len(p)), w.max-int64(len(w.buf)))
	if keep > 0 {
		w.buf = append(w.buf, p[:keep]...)
	}
	w.dropped += int64(len(p)) - max(keep, 0)
	return len(p), nil
}

func (w *cappedWriter) String() string {
	if w.dropped == 0 {
		return string(w.buf)
	}
	return fmt.Sprintf("%s\n[%d bytes dropped]", w.buf, w.dropped)
}
