package ui

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pairing"
)

// Audit actions of the runner that are runs (see internal/runner).
const (
	actionRun     = "call.run"
	actionRefused = "call.refused"
)

// Page sizes.
const (
	tailEvents     = 1000 // events read to find runs
	shownEvents    = 200  // events shown in the audit log
	shownRuns      = 100  // runs shown on the runs page
	overviewRuns   = 5    // runs shown on the overview
	maxReasonRunes = 500
)

// page is a page's template, title and nav entry, and how to load it.
type page struct {
	name, title, nav string
	load             func(ctx context.Context, r *http.Request, s *session) (any, error)
}

// show loads and renders p. errMsg and keep, from a failed form, are shown
// with status; if loading fails, the error page is shown instead.
func (u *UI) show(w http.ResponseWriter, r *http.Request, s *session, p page, status int, errMsg string, keep map[string]string) {
	data, err := p.load(s.ctx, r, s)
	if err != nil {
		if errMsg != "" {
			// The form's own failure is what the owner needs to see.
			u.fail(w, r, s, status, errMsg)
			return
		}
		u.failErr(w, r, s, err)
		return
	}
	u.render(w, r, status, p.name, view{Title: p.title, Nav: p.nav, Session: s, Error: errMsg, Keep: keep, Data: data})
}

// ---- overview

type overviewData struct {
	PendingContracts  int
	ApprovedContracts int
	PendingRequests   int
	Devices           int
	Secrets           int
	Runs              []*contractualv1.AuditEvent
	Verify            *contractualv1.VerifyResponse
}

func (u *UI) overviewPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, page{name: "overview", title: "Overview", nav: "overview", load: u.loadOverview}, http.StatusOK, "", nil)
}

func (u *UI) loadOverview(ctx context.Context, _ *http.Request, _ *session) (any, error) {
	var d overviewData
	cs, err := u.policy.ListContracts(ctx, &contractualv1.ListContractsRequest{})
	if err != nil {
		return nil, err
	}
	for _, rec := range cs.GetRecords() {
		switch rec.GetState() {
		case contractualv1.ContractState_CONTRACT_STATE_PENDING:
			d.PendingContracts++
		case contractualv1.ContractState_CONTRACT_STATE_APPROVED:
			d.ApprovedContracts++
		}
	}
	reqs, err := u.pairing.ListPairingRequests(ctx, &contractualv1.ListPairingRequestsRequest{})
	if err != nil {
		return nil, err
	}
	d.PendingRequests = len(reqs.GetRequests())
	devs, err := u.pairing.ListDevices(ctx, &contractualv1.ListDevicesRequest{})
	if err != nil {
		return nil, err
	}
	for _, dev := range devs.GetDevices() {
		if dev.GetRevokedAt() == nil && dev.GetExpiresAt().AsTime().After(u.cfg.Now()) {
			d.Devices++
		}
	}
	secs, err := u.broker.ListSecrets(ctx, &contractualv1.ListSecretsRequest{})
	if err != nil {
		return nil, err
	}
	d.Secrets = len(secs.GetSecrets())
	runs, _, err := u.tail(ctx)
	if err != nil {
		return nil, err
	}
	d.Runs = runs[:min(len(runs), overviewRuns)]
	if d.Verify, err = u.verify(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// tail returns the recent runs and events, newest first.
func (u *UI) tail(ctx context.Context) (runs, events []*contractualv1.AuditEvent, err error) {
	resp, err := u.audit.Tail(ctx, &contractualv1.TailRequest{Limit: tailEvents})
	if err != nil {
		return nil, nil, err
	}
	events = slices.Clone(resp.GetEvents())
	slices.Reverse(events)
	for _, e := range events {
		if e.GetAction() == actionRun || e.GetAction() == actionRefused {
			runs = append(runs, e)
			if len(runs) == shownRuns {
				break
			}
		}
	}
	return runs, events[:min(len(events), shownEvents)], nil
}

// ---- contracts

type contractsData struct {
	Pending, Approved, Other []*contractualv1.ContractRecord
}

func (u *UI) contractsPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, page{name: "contracts", title: "Contracts", nav: "contracts", load: u.loadContracts}, http.StatusOK, "", nil)
}

func (u *UI) loadContracts(ctx context.Context, _ *http.Request, _ *session) (any, error) {
	resp, err := u.policy.ListContracts(ctx, &contractualv1.ListContractsRequest{})
	if err != nil {
		return nil, err
	}
	var d contractsData
	for _, rec := range resp.GetRecords() {
		switch rec.GetState() {
		case contractualv1.ContractState_CONTRACT_STATE_PENDING:
			d.Pending = append(d.Pending, rec)
		case contractualv1.ContractState_CONTRACT_STATE_APPROVED:
			d.Approved = append(d.Approved, rec)
		default:
			d.Other = append(d.Other, rec)
		}
	}
	return d, nil
}

// stateName is a contract state as a word: "pending", "approved"...
func stateName(st contractualv1.ContractState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "CONTRACT_STATE_"))
}

// contractData is the permissions card of one contract.
type contractData struct {
	contract.Card
	Rec         *contractualv1.ContractRecord
	C           *contractualv1.Contract
	Digest      string
	State       string
	Pending     bool
	Approved    bool
	Predecessor string
	Diff        []changeRow
	Widened     int
}

type changeRow struct {
	Kind, Path, Old, New string
	Widened              bool
}

// digestOK reports whether d looks like "sha256:<64 lowercase hex>".
func digestOK(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// badDigest is the message for a malformed digest in a URL.
var badDigest = errs.E(errs.Invalid, `contract digest must be "sha256:" followed by 64 lowercase hex digits`)

// contractPageSpec is the contract page.
func (u *UI) contractPageSpec() page {
	return page{name: "contract", title: "Contract", nav: "contracts", load: u.loadContract}
}

func (u *UI) contractPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, u.contractPageSpec(), http.StatusOK, "", nil)
}

func (u *UI) loadContract(ctx context.Context, r *http.Request, _ *session) (any, error) {
	digest := r.PathValue("digest")
	if !digestOK(digest) {
		return nil, badDigest
	}
	resp, err := u.policy.GetContract(ctx, &contractualv1.GetContractRequest{Digest: digest})
	if err != nil {
		return nil, err
	}
	rec := resp.GetRecord()
	c := rec.GetContract()
	d := contractData{
		Rec: rec, C: c, Digest: rec.GetDigest(), State: stateName(rec.GetState()),
		Pending:     rec.GetState() == contractualv1.ContractState_CONTRACT_STATE_PENDING,
		Approved:    rec.GetState() == contractualv1.ContractState_CONTRACT_STATE_APPROVED,
		Predecessor: resp.GetPredecessor(),
		Card:        contract.NewCard(c),
	}
	if d.Predecessor != "" {
		d.Diff = u.diff(ctx, r, d.Predecessor, c, resp.GetDiff())
		for _, ch := range d.Diff {
			if ch.Widened {
				d.Widened++
			}
		}
	}
	return d, nil
}

// diff computes the changes from the approved predecessor to c; if the
// predecessor cannot be read, it falls back to the diff policy sent.
func (u *UI) diff(ctx context.Context, r *http.Request, pred string, c *contractualv1.Contract, fallback []*contractualv1.ContractChange) []changeRow {
	var rows []changeRow
	old, err := u.policy.GetContract(ctx, &contractualv1.GetContractRequest{Digest: pred})
	if err != nil {
		u.log.Warn("ui: reading the predecessor for a diff", "path", r.URL.Path, "predecessor", pred, "err", err)
		for _, ch := range fallback {
			rows = append(rows, changeRow{Kind: ch.GetKind(), Path: ch.GetPath(), Old: ch.GetOld(), New: ch.GetNew(), Widened: ch.GetKind() == "widened"})
		}
		return rows
	}
	for _, ch := range contract.Diff(old.GetRecord().GetContract(), c) {
		rows = append(rows, changeRow{Kind: ch.Kind.String(), Path: ch.Path, Old: ch.Old, New: ch.New, Widened: ch.Kind == contract.Widened})
	}
	return rows
}

// ---- devices

type devicesData struct {
	Requests []*contractualv1.PairingRequest
	Devices  []deviceRow
}

type deviceRow struct {
	*contractualv1.Device
	Revoked bool
	Expired bool
	This    bool
}

func (u *UI) devicesPageSpec() page {
	return page{name: "devices", title: "Devices", nav: "devices", load: u.loadDevices}
}

func (u *UI) devicesPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, u.devicesPageSpec(), http.StatusOK, "", nil)
}

func (u *UI) loadDevices(ctx context.Context, _ *http.Request, s *session) (any, error) {
	reqs, err := u.pairing.ListPairingRequests(ctx, &contractualv1.ListPairingRequestsRequest{})
	if err != nil {
		return nil, err
	}
	devs, err := u.pairing.ListDevices(ctx, &contractualv1.ListDevicesRequest{})
	if err != nil {
		return nil, err
	}
	d := devicesData{Requests: reqs.GetRequests()}
	for _, dev := range devs.GetDevices() {
		d.Devices = append(d.Devices, deviceRow{
			Device: dev, Revoked: dev.GetRevokedAt() != nil, Expired: !dev.GetExpiresAt().AsTime().After(u.cfg.Now()),
			This: dev.GetId() == s.DeviceID,
		})
	}
	// Active devices first, this browser at the top.
	slices.SortStableFunc(d.Devices, func(a, b deviceRow) int {
		rank := func(x deviceRow) int {
			switch {
			case x.This:
				return 0
			case !x.Revoked && !x.Expired:
				return 1
			}
			return 2
		}
		return rank(a) - rank(b)
	})
	return d, nil
}

// ---- secrets

type secretsData struct {
	Secrets []*contractualv1.SecretMetadata
	// Missing are secrets that pending or approved contracts inject but
	// that are not stored.
	Missing  []missingSecret
	MaxValue int
}

type missingSecret struct {
	Name      string
	Contracts []string
}

func (u *UI) secretsPageSpec() page {
	return page{name: "secrets", title: "Secrets", nav: "secrets", load: u.loadSecrets}
}

func (u *UI) secretsPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, u.secretsPageSpec(), http.StatusOK, "", nil)
}

func (u *UI) loadSecrets(ctx context.Context, _ *http.Request, _ *session) (any, error) {
	resp, err := u.broker.ListSecrets(ctx, &contractualv1.ListSecretsRequest{})
	if err != nil {
		return nil, err
	}
	d := secretsData{Secrets: resp.GetSecrets(), MaxValue: maxSecretValue}
	have := map[string]bool{}
	for _, m := range d.Secrets {
		have[m.GetName()] = true
	}
	cs, err := u.policy.ListContracts(ctx, &contractualv1.ListContractsRequest{})
	if err != nil {
		return nil, err
	}
	wanted := map[string][]string{}
	var names []string
	for _, rec := range cs.GetRecords() {
		st := rec.GetState()
		if st != contractualv1.ContractState_CONTRACT_STATE_PENDING && st != contractualv1.ContractState_CONTRACT_STATE_APPROVED {
			continue
		}
		for _, rule := range rec.GetContract().GetCapabilities().GetHttp() {
			for _, sec := range rule.GetSecrets() {
				n := sec.GetName()
				if have[n] {
					continue
				}
				if _, seen := wanted[n]; !seen {
					names = append(names, n)
				}
				label := rec.GetContract().GetName() + " " + rec.GetContract().GetVersion() + " (" + stateName(st) + ")"
				if !slices.Contains(wanted[n], label) {
					wanted[n] = append(wanted[n], label)
				}
			}
		}
	}
	slices.Sort(names)
	for _, n := range names {
		d.Missing = append(d.Missing, missingSecret{Name: n, Contracts: wanted[n]})
	}
	return d, nil
}

// ---- runs and audit

type runsData struct {
	Runs   []*contractualv1.AuditEvent
	Events []*contractualv1.AuditEvent
	Verify *contractualv1.VerifyResponse
}

func (u *UI) runsPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, page{name: "runs", title: "Runs and audit", nav: "runs", load: u.loadRuns}, http.StatusOK, "", nil)
}

func (u *UI) loadRuns(ctx context.Context, _ *http.Request, _ *session) (any, error) {
	runs, events, err := u.tail(ctx)
	if err != nil {
		return nil, err
	}
	v, err := u.verify(ctx)
	if err != nil {
		return nil, err
	}
	return runsData{Runs: runs, Events: events, Verify: v}, nil
}

// verifyEvery is how long a good verification of the audit log stands
// before a page runs the next one. A full verification costs about 2 µs an
// event (210 ms for 100,000; BenchmarkVerify in internal/audit), too much
// for every page load of a log that grows for years; a failed one is never
// reused, and a tampered log shows red within this time.
const verifyEvery = 10 * time.Second

// verified is the latest good verification of the audit log.
type verified struct {
	mu    sync.Mutex // held while verifying: concurrent pages share one run
	every time.Duration
	res   *contractualv1.VerifyResponse
	at    time.Time
}

// verify returns a verification of the whole audit log no older than
// verifyEvery.
func (u *UI) verify(ctx context.Context) (*contractualv1.VerifyResponse, error) {
	// A reused result skips the guarded call: authorize here too.
	if err := pairing.AuthorizeContext(ctx, contractualv1connect.AuditServiceVerifyProcedure); err != nil {
		return nil, err
	}
	v := &u.verified
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.res != nil && time.Since(v.at) < v.every {
		return v.res, nil
	}
	res, err := u.audit.Verify(ctx, &contractualv1.VerifyRequest{Full: true})
	if err != nil {
		return nil, err
	}
	v.res, v.at = nil, time.Time{}
	if res.GetOk() {
		v.res, v.at = res, time.Now()
	}
	return res, nil
}
