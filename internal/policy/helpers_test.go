package policy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// recorder is the test double of the audit service: it keeps the events,
// or fails every append while fail is set.
type recorder struct {
	mu     sync.Mutex
	events []*contractualv1.AuditEvent
	fail   error
}

func (r *recorder) Append(_ context.Context, req *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return nil, r.fail
	}
	resp := &contractualv1.AppendResponse{}
	for _, ev := range req.GetEvents() {
		r.events = append(r.events, ev)
		resp.Indexes = append(resp.Indexes, uint64(len(r.events)))
	}
	return resp, nil
}

// setFail makes appends fail (err) or succeed (nil).
func (r *recorder) setFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

// since returns the events recorded after the first n.
func (r *recorder) since(n int) []*contractualv1.AuditEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*contractualv1.AuditEvent(nil), r.events[n:]...)
}

// len returns how many events were recorded.
func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// errAuditDown is what a failing recorder returns.
var errAuditDown = errors.New("audit log unreachable")

// fixture is a Service in a temporary directory with its recorder.
type fixture struct {
	t     testing.TB
	dir   string
	audit *recorder
	s     *Service
	now   time.Time
}

// fixed is the test clock's time.
var fixed = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// newFixture opens a Service in a fresh directory, on a fixed clock.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: filepath.Join(t.TempDir(), "policy"), audit: &recorder{}, now: fixed}
	f.open()
	return f
}

// open opens (or reopens) the service on f's directory.
func (f *fixture) open() {
	f.t.Helper()
	s, err := Open(context.Background(), Config{Dir: f.dir, Now: func() time.Time { return f.now }}, Deps{Audit: f.audit})
	if err != nil {
		f.t.Fatal(err)
	}
	f.s = s
	f.t.Cleanup(func() { s.Close(context.Background()) })
}

// reopen closes the service and opens it again on the same directory.
func (f *fixture) reopen() {
	f.t.Helper()
	if err := f.s.Close(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.open()
}

// ownerDevice is the owner's device in these tests.
const ownerDevice = "device:owner-laptop"

// asOwner is a context of the owner's device.
var asOwner = principal.With(context.Background(), ownerDevice)

// publish publishes a module and contract as the owner and fails on error.
func (f *fixture) publish(wasm, ct []byte) *contractualv1.PublishResponse {
	f.t.Helper()
	resp, err := f.s.Publish(asOwner, &contractualv1.PublishRequest{Module: wasm, Contract: ct, ContractFilename: "contract.yaml"})
	if err != nil {
		f.t.Fatalf("publish: %v", err)
	}
	return resp
}

// approve approves digest as the owner and fails on error.
func (f *fixture) approve(digest string) *contractualv1.ContractRecord {
	f.t.Helper()
	resp, err := f.s.Approve(asOwner, &contractualv1.ApproveRequest{Digest: digest, Reason: "looks fine"})
	if err != nil {
		f.t.Fatalf("approve: %v", err)
	}
	return resp.GetRecord()
}

// evaluate evaluates a call by device:phone and fails on error.
func (f *fixture) evaluate(tool, input string) *contractualv1.EvaluateResponse {
	f.t.Helper()
	resp, err := f.s.Evaluate(context.Background(), &contractualv1.EvaluateRequest{Tool: tool, Input: []byte(input), Principal: "device:phone"})
	if err != nil {
		f.t.Fatalf("evaluate %s %s: %v", tool, input, err)
	}
	return resp
}

// state returns the state of the contract digest.
func (f *fixture) state(digest string) contractualv1.ContractState {
	f.t.Helper()
	resp, err := f.s.GetContract(context.Background(), &contractualv1.GetContractRequest{Digest: digest})
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.GetRecord().GetState()
}

// snapshot renders everything policy stores, and its approved cache, so
// that a test can check that a refused operation changed nothing.
func (f *fixture) snapshot() string {
	f.t.Helper()
	var b strings.Builder
	rows, err := f.s.db.Query(`SELECT seq, digest, name, module, hex(contract), state, published_by, published_at,
		decided_by, coalesce(decided_at, 0), reason FROM contracts ORDER BY seq`)
	if err != nil {
		f.t.Fatal(err)
	}
	for rows.Next() {
		var v [11]any
		ptrs := make([]any, len(v))
		for i := range v {
			ptrs[i] = &v[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			f.t.Fatal(err)
		}
		fmt.Fprintln(&b, v[:]...)
	}
	rows.Close()
	for _, q := range []string{
		`SELECT digest || ' ' || length(wasm) || ' ' || stored_at FROM modules ORDER BY digest`,
		`SELECT key || ' ' || hex(value) FROM meta ORDER BY key`,
	} {
		rows, err = f.s.db.Query(q)
		if err != nil {
			f.t.Fatal(err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				f.t.Fatal(err)
			}
			fmt.Fprintln(&b, line)
		}
		rows.Close()
	}
	for _, name := range slices.Sorted(maps.Keys(f.s.approved.Load().byName)) {
		fmt.Fprintln(&b, "approved", name, f.s.approved.Load().byName[name].rec.GetDigest())
	}
	return b.String()
}

// repoFile reads a file relative to the repository root.
func repoFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// textkit returns the textkit tool's module and contract.
func textkit(t testing.TB) (wasm, ct []byte) {
	return repoFile(t, "tools/textkit/textkit.wasm"), repoFile(t, "tools/textkit/contract.yaml")
}

// hostile reads a module of runtime/sandbox/testdata/hostile.
func hostile(t testing.TB, name string) []byte {
	return repoFile(t, "runtime/sandbox/testdata/hostile/"+name+".wasm")
}

// counter returns a contract "counter" for hostile count.wasm, whose tool
// count_vowels takes {"text": string}, at the given version and risk, with
// extra YAML appended.
func counter(wasm []byte, version, risk, extra string) []byte {
	return fmt.Appendf(nil, `module: %s
name: counter
version: %s
publisher: policy tests
tools:
  - export: count_vowels
    description: Count the ASCII vowels of a text.
    risk: %s
    input_schema: {type: object, properties: {text: {type: string, maxLength: 100}}, required: [text], additionalProperties: false}
%s`, contract.ModuleDigest(wasm), version, risk, extra)
}

// wantErr fails unless err has kind k and its message contains every one
// of subs.
func wantErr(t testing.TB, err error, k errs.Kind, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", k)
	}
	if got := errs.KindOf(err); got != k {
		t.Fatalf("error kind %v, want %v: %v", got, k, err)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not contain %q", err, s)
		}
	}
}

// onlyEvent fails unless evs is one event with the action and outcome,
// and returns it.
func onlyEvent(t testing.TB, evs []*contractualv1.AuditEvent, action, outcome string) *contractualv1.AuditEvent {
	t.Helper()
	if len(evs) != 1 || evs[0].GetAction() != action || evs[0].GetOutcome() != outcome {
		t.Fatalf("audit events %v, want one %s %s", evs, action, outcome)
	}
	return evs[0]
}
