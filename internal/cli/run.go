package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/sandbox"
)

// runOptions are the flags of contractual run.
type runOptions struct {
	contract, export, cacheDir string
	input                      inputFlags
	json                       bool
}

// runCmd runs one call of a tool locally under its contract: the tool
// author's loop, with everything the runner enforces and no services.
func runCmd(ctx context.Context, env *Env, args []string) error {
	var o runOptions
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&o.contract, "contract", "", "the contract file (YAML or JSON)")
	o.input.register(fs)
	fs.StringVar(&o.export, "export", "", "the tool to call (default: the contract's only tool)")
	fs.StringVar(&o.cacheDir, "cache-dir", defaultCacheDir(env), "where compiled modules are cached (empty: no disk cache)")
	fs.BoolVar(&o.json, "json", false, "print a JSON report instead of the output")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one module file")
	}
	if o.contract == "" {
		return usagef("--contract is required: no contract, no run")
	}
	rep := &report{Module: pos[0]}
	err = run(ctx, env, pos[0], o, rep)
	if err != nil {
		rep.Error = &reportError{Kind: errs.KindOf(err).String(), Message: err.Error()}
	}
	if o.json {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if encErr := enc.Encode(rep); encErr != nil {
			return encErr
		}
	} else {
		rep.print(env)
	}
	if err != nil {
		return errReported
	}
	return nil
}

func run(ctx context.Context, env *Env, modulePath string, o runOptions, rep *report) error {
	c, err := loadContract(o.contract)
	if err != nil {
		return err
	}
	rep.Contract, _ = contract.Digest(c)
	wasm, err := os.ReadFile(modulePath)
	if err != nil {
		return errs.Wrap(errs.Invalid, err, "reading module")
	}
	if err := checkModule(c, o.contract, modulePath, wasm); err != nil {
		return err
	}
	tool, err := pickTool(c, o.export)
	if err != nil {
		return err
	}
	rep.Tool = tool.GetExport()
	input, err := o.input.read(env)
	if err != nil {
		return err
	}
	// The module gets what the runner would give it: the canonical input.
	if input, err = decision.Canonical(input); err != nil {
		return err
	}
	if err := contract.CheckInput(tool, input); err != nil {
		return err
	}

	e, err := sandbox.NewEngine(sandbox.Options{CacheDir: o.cacheDir, Egress: egress.Config{}})
	if err != nil {
		return err
	}
	defer e.Close(ctx)
	m, err := e.Load(ctx, wasm, sandbox.GrantsFor(c))
	if err != nil {
		return err
	}
	defer m.Close(ctx)
	res, err := m.CallTool(ctx, tool, input)
	rep.fill(res)
	return err
}

// pickTool finds the tool to call: the named one, or the only one.
func pickTool(c *contractualv1.Contract, export string) (*contractualv1.Tool, error) {
	var names []string
	for _, t := range c.GetTools() {
		if t.GetExport() == export || (export == "" && len(c.GetTools()) == 1) {
			return t, nil
		}
		names = append(names, t.GetExport())
	}
	if export == "" {
		return nil, errs.E(errs.Invalid, "the contract has %d tools (%s): choose one with --export", len(names), strings.Join(names, ", "))
	}
	return nil, errs.E(errs.PermissionDenied, "the contract grants no tool %q (it has: %s)", export, strings.Join(names, ", "))
}

func defaultCacheDir(env *Env) string {
	if d := env.getenv("CONTRACTUAL_CACHE_DIR"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "contractual", "wazero")
}

// report is what contractual run tells about a call.
type report struct {
	Module     string             `json:"module"`
	Contract   string             `json:"contract,omitempty"`
	Tool       string             `json:"tool,omitempty"`
	Output     json.RawMessage    `json:"output,omitempty"`
	OutputText string             `json:"output_text,omitempty"`
	Egress     []egress.Record    `json:"egress"`
	Logs       []sandbox.LogEntry `json:"logs"`
	Stdout     string             `json:"stdout,omitempty"`
	Stderr     string             `json:"stderr,omitempty"`
	DurationMS float64            `json:"duration_ms"`
	PeakMemory uint64             `json:"peak_memory_bytes"`
	HostCalls  int                `json:"host_calls"`
	Error      *reportError       `json:"error,omitempty"`

	raw []byte
}

type reportError struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

func (r *report) fill(res *sandbox.Result) {
	if res == nil {
		return
	}
	r.raw = res.Output
	if json.Valid(res.Output) {
		r.Output = res.Output
	} else {
		r.OutputText = string(res.Output)
	}
	r.Egress, r.Logs = res.Egress, res.Logs
	r.Stdout, r.Stderr = res.Stdout, res.Stderr
	r.DurationMS = float64(res.Duration) / float64(time.Millisecond)
	r.PeakMemory, r.HostCalls = res.PeakMemory, res.HostCalls
}

// print writes the output to stdout and everything else to stderr.
func (r *report) print(env *Env) {
	if len(r.raw) > 0 {
		env.Stdout.Write(r.raw)
		if !bytes.HasSuffix(r.raw, []byte("\n")) {
			io.WriteString(env.Stdout, "\n")
		}
	}
	w := env.Stderr
	for _, e := range r.Egress {
		hop := ""
		if e.Redirect > 0 {
			hop = fmt.Sprintf(" (redirect %d)", e.Redirect)
		}
		switch {
		case !e.Allowed:
			fmt.Fprintf(w, "egress: %s %s%s refused: %s\n", e.Method, e.URL, hop, e.Reason)
		case e.Status == 0:
			fmt.Fprintf(w, "egress: %s %s%s failed: %s\n", e.Method, e.URL, hop, e.Reason)
		default:
			fmt.Fprintf(w, "egress: %s %s%s -> %d, %d bytes (rule %d)\n", e.Method, e.URL, hop, e.Status, e.Bytes, e.Rule)
		}
	}
	for _, l := range r.Logs {
		fmt.Fprintf(w, "log %s: %s\n", l.Level, l.Message)
	}
	for name, s := range map[string]string{"stdout": r.Stdout, "stderr": r.Stderr} {
		if s != "" {
			fmt.Fprintf(w, "module %s:\n%s\n", name, strings.TrimRight(s, "\n"))
		}
	}
	if r.Tool != "" && r.DurationMS > 0 {
		fmt.Fprintf(w, "%s: %.2f ms, peak memory %.1f MiB, %d host calls\n",
			r.Tool, r.DurationMS, float64(r.PeakMemory)/(1<<20), r.HostCalls)
	}
	if e := r.Error; e != nil {
		verb := "failed"
		if e.Kind == errs.PermissionDenied.String() || e.Kind == errs.Invalid.String() {
			verb = "refused"
		}
		fmt.Fprintf(w, "%s: %s: %s\n", verb, e.Kind, e.Message)
	}
}
