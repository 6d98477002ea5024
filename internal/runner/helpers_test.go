package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/metrics"
	"github.com/contractual/contractual/runtime/sandbox"
)

// engine is shared by every test: its compilation cache makes loading a
// module a second time (in another test's runner) cheap.
var engine *sandbox.Engine

func TestMain(m *testing.M) {
	var err error
	engine, err = sandbox.NewEngine(sandbox.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	engine.Close(context.Background())
	os.Exit(code)
}

// readFile reads a file relative to the repository root.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hostile reads a fixture of runtime/sandbox/testdata/hostile.
func hostile(t testing.TB, name string) []byte {
	return readFile(t, "runtime/sandbox/testdata/hostile/"+name)
}

// smallContract is a contract for a hostile fixture: the tools named by
// exports, input {type: object}, and extra YAML (limits...) appended.
// Without limits in extra, the timeout is a minute: calls that should
// succeed do so on a loaded machine.
func smallContract(wasm []byte, name string, exports []string, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "module: %s\nname: %s\nversion: 1.0.0\npublisher: runner tests\ntools:\n", contract.ModuleDigest(wasm), name)
	for _, e := range exports {
		fmt.Fprintf(&b, "  - export: %s\n    description: %s of %s.\n    risk: low\n    input_schema: {type: object}\n", e, e, name)
	}
	if !strings.Contains(extra, "limits:") {
		extra += "limits: {timeout_ms: 60000}\n"
	}
	b.WriteString(extra)
	return b.String()
}

// fakePolicy is the unit-test Policy: records, modules and the public
// keyset in maps, with a count of calls per method and an optional hook
// that runs (and may block) at the start of each call.
type fakePolicy struct {
	mu      sync.Mutex
	public  []byte
	records map[string]*contractualv1.ContractRecord
	modules map[string][]byte
	calls   map[string]int
	hook    func(method string)
}

func (p *fakePolicy) enter(method string) {
	p.mu.Lock()
	p.calls[method]++
	hook := p.hook
	p.mu.Unlock()
	if hook != nil {
		hook(method)
	}
}

func (p *fakePolicy) count(method string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[method]
}

func (p *fakePolicy) GetModule(_ context.Context, req *contractualv1.GetModuleRequest) (*contractualv1.GetModuleResponse, error) {
	p.enter("GetModule")
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.modules[req.GetDigest()]
	if !ok {
		return nil, errs.E(errs.NotFound, "no module %s", req.GetDigest())
	}
	return &contractualv1.GetModuleResponse{Module: b}, nil
}

func (p *fakePolicy) GetContract(_ context.Context, req *contractualv1.GetContractRequest) (*contractualv1.GetContractResponse, error) {
	p.enter("GetContract")
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.records[req.GetDigest()]
	if !ok {
		return nil, errs.E(errs.NotFound, "no contract %s", req.GetDigest())
	}
	return &contractualv1.GetContractResponse{Record: proto.CloneOf(r)}, nil
}

func (p *fakePolicy) GetVerifier(context.Context, *contractualv1.GetVerifierRequest) (*contractualv1.GetVerifierResponse, error) {
	p.enter("GetVerifier")
	p.mu.Lock()
	defer p.mu.Unlock()
	return &contractualv1.GetVerifierResponse{PublicKeyset: p.public}, nil
}

// WatchContracts reports no change, ever: the unit tests' runners load
// modules on demand only.
func (p *fakePolicy) WatchContracts(ctx context.Context, _ *contractualv1.WatchContractsRequest) (*contractualv1.WatchContractsResponse, error) {
	<-ctx.Done()
	return nil, errs.Wrap(errs.Unavailable, ctx.Err(), "watch canceled")
}

// setState moves a contract to st.
func (p *fakePolicy) setState(digest string, st contractualv1.ContractState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.records[digest].State = st
}

// recorder is the unit-test Auditor: it keeps the events, or fails every
// append while fail is set, and, like a networked client, fails an append
// whose context has ended.
type recorder struct {
	mu     sync.Mutex
	events []*contractualv1.AuditEvent
	fail   error
}

func (r *recorder) Append(ctx context.Context, req *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return nil, r.fail
	}
	if err := ctx.Err(); err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "append")
	}
	resp := &contractualv1.AppendResponse{}
	for _, ev := range req.GetEvents() {
		r.events = append(r.events, proto.CloneOf(ev))
		resp.Indexes = append(resp.Indexes, uint64(len(r.events)))
	}
	return resp, nil
}

func (r *recorder) setFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

func (r *recorder) all() []*contractualv1.AuditEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*contractualv1.AuditEvent(nil), r.events...)
}

// last returns the newest event.
func (r *recorder) last(t testing.TB) *contractualv1.AuditEvent {
	t.Helper()
	evs := r.all()
	if len(evs) == 0 {
		t.Fatal("no audit event")
	}
	return evs[len(evs)-1]
}

// clock is a settable clock, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// fixture is a runner over a fakePolicy with a fresh signing key, a
// recorder, the shared engine and a settable clock.
type fixture struct {
	t      testing.TB
	keys   *keyset.Handle
	signer *decision.Signer
	policy *fakePolicy
	audit  *recorder
	clock  *clock
	svc    *Service
	seq    atomic.Int64
}

func newFixture(t testing.TB, opts Config) *fixture {
	t.Helper()
	return newFixtureOn(t, engine, opts)
}

// newFixtureOn is newFixture on engine e.
func newFixtureOn(t testing.TB, e *sandbox.Engine, opts Config) *fixture {
	t.Helper()
	f := &fixture{
		t:      t,
		policy: &fakePolicy{records: map[string]*contractualv1.ContractRecord{}, modules: map[string][]byte{}, calls: map[string]int{}},
		audit:  &recorder{},
		clock:  &clock{},
	}
	f.clock.set(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	f.rotate()
	svc, err := New(context.Background(), opts, Deps{Policy: f.policy, Broker: noSecrets{}, Audit: f.audit, Engine: e, Metrics: metrics.NewRegistry().Tools()})
	if err != nil {
		t.Fatal(err)
	}
	svc.now = f.clock.now
	svc.started = f.clock.now()
	t.Cleanup(func() {
		if err := svc.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	f.svc = svc
	return f
}

// rotate gives policy a new signing key; decisions are signed with it from
// now on, and the runner learns it only by fetching again.
func (f *fixture) rotate() {
	f.t.Helper()
	h, s := newKey(f.t)
	pub, err := decision.MarshalPublic(h)
	if err != nil {
		f.t.Fatal(err)
	}
	f.policy.mu.Lock()
	f.policy.public = pub
	f.policy.mu.Unlock()
	f.keys, f.signer = h, s
}

func newKey(t testing.TB) (*keyset.Handle, *decision.Signer) {
	t.Helper()
	h, err := decision.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	s, err := decision.NewSigner(h)
	if err != nil {
		t.Fatal(err)
	}
	return h, s
}

// publish stores wasm and the contract (YAML) in policy as approved and
// returns the contract.
func (f *fixture) publish(wasm []byte, yaml string) *contractualv1.Contract {
	f.t.Helper()
	ct, err := contract.Load([]byte(yaml), "contract.yaml")
	if err != nil {
		f.t.Fatal(err)
	}
	if got := contract.ModuleDigest(wasm); got != ct.GetModule() {
		f.t.Fatalf("contract names module %s, the bytes are %s", ct.GetModule(), got)
	}
	digest, err := contract.Digest(ct)
	if err != nil {
		f.t.Fatal(err)
	}
	f.policy.mu.Lock()
	defer f.policy.mu.Unlock()
	f.policy.modules[ct.GetModule()] = wasm
	f.policy.records[digest] = &contractualv1.ContractRecord{
		Digest: digest, Contract: proto.CloneOf(ct), State: contractualv1.ContractState_CONTRACT_STATE_APPROVED,
	}
	return ct
}

// count publishes count.wasm under a contract named name.
func (f *fixture) count(name string) *contractualv1.Contract {
	wasm := hostile(f.t, "count.wasm")
	return f.publish(wasm, smallContract(wasm, name, []string{"count_vowels"}, ""))
}

// digestOf returns ct's digest.
func digestOf(t testing.TB, ct *contractualv1.Contract) string {
	t.Helper()
	d, err := contract.Digest(ct)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// decision returns policy's decision to allow export of ct with input,
// for one minute, edited by edits.
func (f *fixture) decision(ct *contractualv1.Contract, export, input string, edits ...func(*contractualv1.Decision)) *contractualv1.Decision {
	f.t.Helper()
	canon, err := decision.Canonical([]byte(input))
	if err != nil {
		f.t.Fatal(err)
	}
	digest := digestOf(f.t, ct)
	now := f.clock.now()
	d := &contractualv1.Decision{
		Id:             fmt.Sprintf("d-%d", f.seq.Add(1)),
		Verdict:        contractualv1.Verdict_VERDICT_ALLOW,
		Tool:           ct.GetName() + "." + export,
		Export:         export,
		ContractDigest: digest,
		ModuleDigest:   ct.GetModule(),
		InputHash:      decision.Hash(canon),
		Principal:      "device:test",
		IssuedAt:       timestamppb.New(now),
		ExpiresAt:      timestamppb.New(now.Add(time.Minute)),
	}
	for _, edit := range edits {
		edit(d)
	}
	return d
}

// request signs d with policy's key into a request with input.
func (f *fixture) request(d *contractualv1.Decision, input string) *contractualv1.ExecuteRequest {
	f.t.Helper()
	return signWith(f.t, f.signer, d, input)
}

func signWith(t testing.TB, s *decision.Signer, d *contractualv1.Decision, input string) *contractualv1.ExecuteRequest {
	t.Helper()
	sd, err := s.Sign(d)
	if err != nil {
		t.Fatal(err)
	}
	return &contractualv1.ExecuteRequest{Decision: sd, Input: []byte(input)}
}

// call decides and builds the request of one call in one step.
func (f *fixture) call(ct *contractualv1.Contract, export, input string) *contractualv1.ExecuteRequest {
	return f.request(f.decision(ct, export, input), input)
}

// wantKind fails unless err is of kind k and its message contains want.
func wantKind(t testing.TB, err error, k errs.Kind, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s %q", k, want)
	}
	if errs.KindOf(err) != k || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v (%s), want %s containing %q", err, errs.KindOf(err), k, want)
	}
}

// noSecrets is a broker that holds no secret: every handle is refused.
type noSecrets struct{}

func (noSecrets) IssueHandle(context.Context, *contractualv1.IssueHandleRequest) (*contractualv1.IssueHandleResponse, error) {
	return nil, errs.E(errs.NotFound, "no secrets here")
}

func (noSecrets) RedeemHandle(context.Context, *contractualv1.RedeemHandleRequest) (*contractualv1.RedeemHandleResponse, error) {
	return nil, errs.E(errs.NotFound, "no secrets here")
}
