package broker

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/decision"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
)

// secretValue is distinctive, so a leak is found by searching for it.
const secretValue = "sk-LEAKCANARY-7f3a9c1e5b2d4086"

// grantingYAML is a contract whose one rule injects API_KEY into requests
// to https://api.example.com.
const grantingYAML = `module: sha256:7e3592ba93d6d205dd925a4c15f3be4fcd694e4989248c1ffedfa85c5d1ddb6c
name: keyed
version: 1.0.0
publisher: broker tests
description: Calls an API with an injected key.
tools:
  - export: call
    description: Call the API.
    risk: low
    input_schema: {type: object}
    output_schema: {type: object}
capabilities:
  http:
    - scheme: https
      host: api.example.com
      methods: [GET]
      secrets:
        - {name: API_KEY, header: Authorization, format: "Bearer {{secret}}"}
    - scheme: https
      host: other.example.com
      methods: [GET]
limits: {memory_mib: 16, timeout_ms: 5000, output_bytes: 65536, http_requests: 2}
`

// plainYAML is a contract that names no secret at all.
const plainYAML = `module: sha256:7e3592ba93d6d205dd925a4c15f3be4fcd694e4989248c1ffedfa85c5d1ddb6c
name: plain
version: 1.0.0
publisher: broker tests
description: Calls an API without a key.
tools:
  - export: call
    description: Call the API.
    risk: low
    input_schema: {type: object}
    output_schema: {type: object}
capabilities:
  http:
    - scheme: https
      host: api.example.com
      methods: [GET]
limits: {memory_mib: 16, timeout_ms: 5000, output_bytes: 65536, http_requests: 2}
`

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakePolicy serves contracts and the public keyset, as policy would.
type fakePolicy struct {
	public  []byte
	records map[string]*contractualv1.ContractRecord
}

func (p *fakePolicy) GetContract(_ context.Context, req *contractualv1.GetContractRequest) (*contractualv1.GetContractResponse, error) {
	rec, ok := p.records[req.GetDigest()]
	if !ok {
		return nil, errs.E(errs.NotFound, "no contract %s", req.GetDigest())
	}
	return &contractualv1.GetContractResponse{Record: proto.Clone(rec).(*contractualv1.ContractRecord)}, nil
}

func (p *fakePolicy) GetVerifier(context.Context, *contractualv1.GetVerifierRequest) (*contractualv1.GetVerifierResponse, error) {
	return &contractualv1.GetVerifierResponse{PublicKeyset: p.public}, nil
}

// recorder is an Auditor that keeps events, and fails while failing is set.
type recorder struct {
	mu      sync.Mutex
	events  []*contractualv1.AuditEvent
	failing bool
}

func (r *recorder) Append(_ context.Context, req *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		return nil, errors.New("audit disk is full")
	}
	resp := &contractualv1.AppendResponse{}
	for _, ev := range req.GetEvents() {
		r.events = append(r.events, proto.Clone(ev).(*contractualv1.AuditEvent))
		resp.Indexes = append(resp.Indexes, uint64(len(r.events)))
	}
	return resp, nil
}

func (r *recorder) setFailing(f bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failing = f
}

// all returns a copy of the recorded events.
func (r *recorder) all() []*contractualv1.AuditEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*contractualv1.AuditEvent(nil), r.events...)
}

// actions returns the recorded events' actions.
func (r *recorder) actions() []string {
	var out []string
	for _, ev := range r.all() {
		out = append(out, ev.GetAction())
	}
	return out
}

// env is a broker under test with its collaborators.
type env struct {
	t        *testing.T
	dir, kek string
	svc      *Service
	policy   *fakePolicy
	audit    *recorder
	clock    *clock
	signer   *decision.Signer
	granting string // digest of the contract granting API_KEY
	plain    string // digest of the contract naming no secret
}

// newEnv opens a broker in a temporary directory, with a fresh KEK, a
// policy double holding both test contracts (approved), and a recorder.
func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{
		t:      t,
		dir:    filepath.Join(dir, "broker"),
		kek:    filepath.Join(dir, "kek"),
		audit:  &recorder{},
		clock:  &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
		policy: &fakePolicy{records: map[string]*contractualv1.ContractRecord{}},
	}
	if err := GenerateKEK(e.kek); err != nil {
		t.Fatal(err)
	}
	ks, err := decision.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	if e.signer, err = decision.NewSigner(ks); err != nil {
		t.Fatal(err)
	}
	if e.policy.public, err = decision.MarshalPublic(ks); err != nil {
		t.Fatal(err)
	}
	e.granting = e.addContract(grantingYAML, contractualv1.ContractState_CONTRACT_STATE_APPROVED)
	e.plain = e.addContract(plainYAML, contractualv1.ContractState_CONTRACT_STATE_APPROVED)
	e.svc = e.open()
	t.Cleanup(func() { e.svc.Close(context.Background()) })
	return e
}

// open opens the broker on e's store and KEK.
func (e *env) open() *Service {
	e.t.Helper()
	svc, err := Open(context.Background(), Config{Dir: e.dir, KEKFile: e.kek, Now: e.clock.Now}, Deps{Policy: e.policy, Audit: e.audit})
	if err != nil {
		e.t.Fatal(err)
	}
	return svc
}

// addContract parses yaml and gives it to the policy double in state st.
func (e *env) addContract(yaml string, st contractualv1.ContractState) string {
	e.t.Helper()
	c, err := contract.Load([]byte(yaml), "c.yaml")
	if err != nil {
		e.t.Fatal(err)
	}
	digest, err := contract.Digest(c)
	if err != nil {
		e.t.Fatal(err)
	}
	e.policy.records[digest] = &contractualv1.ContractRecord{Digest: digest, Contract: c, State: st}
	return digest
}

// decision returns a signed decision for contract digest, changed by the
// given edits.
func (e *env) decision(digest string, edits ...func(*contractualv1.Decision)) *contractualv1.SignedDecision {
	e.t.Helper()
	now := e.clock.Now()
	d := &contractualv1.Decision{
		Id:             "dec-1",
		Verdict:        contractualv1.Verdict_VERDICT_ALLOW,
		Tool:           "keyed.call",
		Export:         "call",
		ContractDigest: digest,
		ModuleDigest:   e.policy.records[digest].GetContract().GetModule(),
		InputHash:      decision.Hash([]byte(`{}`)),
		Principal:      "device:phone",
		IssuedAt:       timestamppb.New(now),
		ExpiresAt:      timestamppb.New(now.Add(30 * time.Second)),
	}
	for _, edit := range edits {
		edit(d)
	}
	sd, err := e.signer.Sign(d)
	if err != nil {
		e.t.Fatal(err)
	}
	return sd
}

// ownerDevice is the owner's device in these tests.
const ownerDevice = "device:owner-laptop"

// ownerCtx and runnerCtx are the contexts of the owner's device and the
// runner.
func ownerCtx() context.Context  { return principal.With(context.Background(), ownerDevice) }
func runnerCtx() context.Context { return principal.With(context.Background(), principal.Runner) }

// put stores value as secret name, as the owner.
func (e *env) put(name, value string) *contractualv1.SecretMetadata {
	e.t.Helper()
	resp, err := e.svc.PutSecret(ownerCtx(), &contractualv1.PutSecretRequest{Name: name, Value: []byte(value)})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.GetSecret()
}

// issue asks for a handle for API_KEY at https://api.example.com, as the
// runner, with a decision for the granting contract.
func (e *env) issue() string {
	e.t.Helper()
	resp, err := e.svc.IssueHandle(runnerCtx(), &contractualv1.IssueHandleRequest{
		Decision: e.decision(e.granting), Secret: "API_KEY", Audience: "https://api.example.com",
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.GetHandle()
}

// redeem redeems h for https://api.example.com as the runner.
func (e *env) redeem(h string) (*contractualv1.RedeemHandleResponse, error) {
	return e.svc.RedeemHandle(runnerCtx(), &contractualv1.RedeemHandleRequest{Handle: h, Audience: "https://api.example.com"})
}

// wantKind fails unless err has kind k.
func wantKind(t *testing.T, err error, k errs.Kind) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", k)
	}
	if strings.Contains(err.Error(), secretValue) {
		t.Fatalf("an error quotes the secret value: %v", err)
	}
	if got := errs.KindOf(err); got != k {
		t.Fatalf("got %s (%v), want %s", got, err, k)
	}
}
