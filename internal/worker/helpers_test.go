package worker

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/job"
	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/authz"
	"github.com/contractual/contractual/internal/broker"
	"github.com/contractual/contractual/internal/metrics"
	"github.com/contractual/contractual/internal/policy"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/runner"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
	"github.com/contractual/contractual/runtime/sandbox"
)

// compileCache is the sandbox's compilation cache every test's engine
// shares, so that ghstars compiles once per process, not once per test.
var compileCache string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "worker-test-cache")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	compileCache = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoFile reads a file relative to the repository root.
func repoFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(p)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sink is api.github.com for the ghstars tool: a counting HTTP sink that
// applies each Idempotency-Key once (a repeated key gets the same answer
// and applies nothing), can fail a repository's first requests, and can
// hold a repository's first request open after applying it (the side
// effect happened, its answer never arrives).
type sink struct {
	srv *http.Server
	ln  net.Listener
	url string
	// roots trusts the sink's certificate.
	roots *x509.CertPool
	pem   []byte

	mu      sync.Mutex
	seen    map[string]int    // requests per key
	applied map[string]int    // side effects per key
	keyOf   map[string]string // repository → the key of its last request
	fail    map[string]int    // repository → requests still to fail with 500
	hold    map[string]chan struct{}
	held    map[string]bool
	next    map[string]string // repository → the full_name answered
	onHit   func(repo string)
	total   atomic.Int64
	// arrived gets each repository when its request arrives.
	arrived chan string
}

// newSink starts a sink.
func newSink(t testing.TB) *sink {
	t.Helper()
	s := &sink{
		seen: map[string]int{}, applied: map[string]int{}, keyOf: map[string]string{}, fail: map[string]int{},
		hold: map[string]chan struct{}{}, held: map[string]bool{}, next: map[string]string{},
		arrived: make(chan string, 4096),
	}
	srv := egresstest.NewTLSServer(http.HandlerFunc(s.serve), "api.github.com")
	t.Cleanup(srv.Close)
	s.url = srv.Listener.Addr().String()
	s.roots = x509.NewCertPool()
	s.roots.AddCert(srv.Certificate())
	s.pem = certPEM(srv.Certificate())
	return s
}

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	repo := path.Base(r.URL.Path)
	key := r.Header.Get("Idempotency-Key")
	s.total.Add(1)
	s.mu.Lock()
	s.seen[key]++
	s.keyOf[repo] = key
	if s.fail[repo] > 0 {
		s.fail[repo]--
		s.mu.Unlock()
		s.arrived <- repo
		http.Error(w, "try again", http.StatusInternalServerError)
		return
	}
	if key == "" || s.applied[key] == 0 {
		s.applied[key]++
	}
	hold := s.hold[repo]
	first := !s.held[repo]
	s.held[repo] = true
	name := s.next[repo]
	hit := s.onHit
	s.mu.Unlock()
	if hit != nil {
		hit(repo)
	}
	s.arrived <- repo
	if hold != nil && first {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	if name == "" {
		name = repo
	}
	json.NewEncoder(w).Encode(map[string]any{"full_name": name, "stargazers_count": 7, "forks_count": 1})
}

// egress is the sandbox's egress configuration that reaches the sink as
// api.github.com.
func (s *sink) egress() egress.Config {
	return egress.Config{Dialer: routeDialer(s.url), RootCAs: s.roots}
}

// wait waits for a request for repo to arrive.
func (s *sink) wait(t testing.TB, repo string) {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case got := <-s.arrived:
			if got == repo {
				return
			}
		case <-timeout:
			t.Fatalf("no request for %s reached the sink", repo)
		}
	}
}

func (s *sink) counts(repo string) (key string, seen, applied int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key = s.keyOf[repo]
	return key, s.seen[key], s.applied[key]
}

// routeDialer sends api.github.com:443 to a local address.
type routeDialer string

func (d routeDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if address != "api.github.com:443" {
		return nil, fmt.Errorf("no route to %s", address)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, string(d))
}

// stack is the real services a worker calls: audit, policy, the broker,
// the sandbox and the runner, in one process, with their stores in dir.
type stack struct {
	audit  *audit.Service
	policy *policy.Service
	broker *broker.Service
	engine *sandbox.Engine
	runner *runner.Service
	// ghstars is the approved ghstars contract's digest.
	ghstars string
}

// owner is the context of the owner's device.
var owner = principal.With(context.Background(), "device:owner")

// newStack opens the services in dir, egress going by eg, and approves
// the ghstars tool.
func newStack(t testing.TB, dir string, eg egress.Config) *stack {
	t.Helper()
	ctx := context.Background()
	st := &stack{}
	var err error
	if st.audit, err = audit.OpenService(ctx, audit.Config{Dir: filepath.Join(dir, "audit")}, audit.Deps{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.audit.Close(ctx) })
	if st.policy, err = policy.Open(ctx, policy.Config{Dir: filepath.Join(dir, "policy")}, policy.Deps{Audit: st.audit}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.policy.Close(ctx) })
	kek := filepath.Join(dir, "broker.kek")
	if _, err := os.Stat(kek); err != nil {
		if err := broker.GenerateKEK(kek); err != nil {
			t.Fatal(err)
		}
	}
	if st.broker, err = broker.Open(ctx, broker.Config{Dir: filepath.Join(dir, "broker"), KEKFile: kek}, broker.Deps{Policy: st.policy, Audit: st.audit}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.broker.Close(ctx) })
	if st.engine, err = sandbox.NewEngine(sandbox.Options{Egress: eg, CacheDir: compileCache}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.engine.Close(ctx) })
	if st.runner, err = runner.New(ctx, runner.Config{}, runner.Deps{Policy: st.policy, Broker: st.broker, Audit: st.audit, Engine: st.engine, Metrics: metrics.NewRegistry().Tools()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.runner.Close(ctx) })
	pub, err := st.policy.Publish(owner, &contractualv1.PublishRequest{
		Module: repoFile(t, "tools/ghstars/ghstars.wasm"), Contract: repoFile(t, "tools/ghstars/contract.yaml"), ContractFilename: "contract.yaml",
	})
	if err != nil {
		t.Fatal(err)
	}
	st.ghstars = pub.GetRecord().GetDigest()
	if pub.GetRecord().GetState() == contractualv1.ContractState_CONTRACT_STATE_PENDING {
		if _, err := st.policy.Approve(owner, &contractualv1.ApproveRequest{Digest: st.ghstars}); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// ghstarsDigest is the committed ghstars contract's digest.
func ghstarsDigest(t testing.TB) string {
	t.Helper()
	c, err := contract.Load(repoFile(t, "tools/ghstars/contract.yaml"), "contract.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, err := contract.Digest(c)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// chainJob is a job of three ghstars steps, one, two and three, each
// reading the repository the step before named (its output's full_name;
// the first from the trigger's payload), with extra YAML appended.
func chainJob(t testing.TB, name, extra string) string {
	d := ghstarsDigest(t)
	return fmt.Sprintf(`name: %s
trigger: {cron: {expression: "0 2 * * *", time_zone: UTC}}
steps:
  - {id: one, tool: ghstars.repo_stars, contract: %[2]s, input: {owner: o, repo: {$ref: trigger.payload.repo}}}
  - {id: two, tool: ghstars.repo_stars, contract: %[2]s, input: {owner: o, repo: {$ref: steps.one.output.full_name}}}
  - {id: three, tool: ghstars.repo_stars, contract: %[2]s, input: {owner: o, repo: {$ref: steps.two.output.full_name}}}
%s`, name, d, extra)
}

// chained makes the sink answer one → two → three.
func (s *sink) chained() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next["one"], s.next["two"] = "two", "three"
}

// jobs is policy's JobService as the worker calls it over the mesh: as
// itself, "service:worker" (the principal authz gives the worker's own
// calls).
type jobs struct{ p *policy.Service }

func (j jobs) GetJob(ctx context.Context, req *contractualv1.GetJobRequest) (*contractualv1.GetJobResponse, error) {
	return j.p.GetJob(principal.With(ctx, authz.Worker.Principal()), req)
}

func (j jobs) PauseJob(ctx context.Context, req *contractualv1.PauseJobRequest) (*contractualv1.PauseJobResponse, error) {
	return j.p.PauseJob(principal.With(ctx, authz.Worker.Principal()), req)
}

// jobs returns policy's JobService as the worker calls it.
func (st *stack) jobs() Jobs { return jobs{st.policy} }

// approveJob creates the job file's version in policy and approves it as
// the owner (a version policy already holds is approved already); it
// returns the approved record.
func (st *stack) approveJob(t testing.TB, yaml string) *contractualv1.JobRecord {
	t.Helper()
	c, err := st.policy.CreateJob(owner, &contractualv1.CreateJobRequest{Job: []byte(yaml), Filename: "job.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	rec := c.GetRecord()
	if rec.GetState() == contractualv1.JobState_JOB_STATE_PENDING {
		a, err := st.policy.ApproveJob(owner, &contractualv1.ApproveJobRequest{Digest: rec.GetDigest()})
		if err != nil {
			t.Fatal(err)
		}
		rec = a.GetRecord()
	}
	if rec.GetState() != contractualv1.JobState_JOB_STATE_APPROVED {
		t.Fatalf("job %s is %v", rec.GetId(), rec.GetState())
	}
	return rec
}

// pause is the job's pause in policy, nil if it is not paused.
func (st *stack) pause(t testing.TB, id string) *contractualv1.JobPause {
	t.Helper()
	resp, err := st.policy.GetJob(owner, &contractualv1.GetJobRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRecord().GetState() != contractualv1.JobState_JOB_STATE_PAUSED {
		return nil
	}
	return resp.GetRecord().GetPause()
}

// jobDigest is the digest of a job file.
func jobDigest(t testing.TB, yaml string) string {
	t.Helper()
	jb, err := job.Load([]byte(yaml), "job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, err := job.Digest(jb)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// clock is a settable clock, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// openWorker opens a worker on dir/worker over st, without starting
// workers; cfg's Dir is set.
func openWorker(t testing.TB, dir string, st *stack, cfg Config) *Service {
	t.Helper()
	cfg.Dir = filepath.Join(dir, "worker")
	s, err := open(context.Background(), cfg, Deps{Policy: st.policy, Runner: st.runner, Jobs: st.jobs(), Audit: st.audit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// enqueue enqueues a cron firing of rec at at with payload (JSON).
func enqueue(t testing.TB, s *Service, rec *contractualv1.JobRecord, at time.Time, payload string) *contractualv1.EnqueueResponse {
	t.Helper()
	req := &contractualv1.EnqueueRequest{JobId: rec.GetId(), JobDigest: rec.GetDigest(), Trigger: "cron", ScheduledAt: timestamp(at)}
	if payload != "" {
		req.Payload = jsonValue(t, payload)
	}
	resp, err := s.Enqueue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// drain runs due runs as worker id until none is due.
func drain(t testing.TB, s *Service, id string) {
	t.Helper()
	for {
		run, err := s.work(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if run == "" {
			return
		}
	}
}

// run reads a run.
func run(t testing.TB, s *Service, id string) *contractualv1.JobRun {
	t.Helper()
	resp, err := s.GetRun(context.Background(), &contractualv1.GetRunRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetRun()
}

// stepSummary is "id:state:attempts" of each step.
func stepSummary(r *contractualv1.JobRun) string {
	var parts []string
	for _, s := range r.GetSteps() {
		parts = append(parts, fmt.Sprintf("%s:%s:%d", s.GetId(), strings.ToLower(strings.TrimPrefix(s.GetState().String(), "STEP_STATE_")), s.GetAttempts()))
	}
	return strings.Join(parts, " ")
}

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func jsonValue(t testing.TB, s string) *structpb.Value {
	t.Helper()
	v := new(structpb.Value)
	if err := protojson.Unmarshal([]byte(s), v); err != nil {
		t.Fatal(err)
	}
	return v
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
