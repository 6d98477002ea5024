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
	"github.com/contractual/contractual/internal/paging"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/secret"
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
	v := view{Title: p.title, Nav: p.nav, Session: s, Error: errMsg, Keep: keep, Data: data}
	if rf, ok := data.(interface{ Refreshing() bool }); ok {
		v.Refresh = rf.Refreshing()
	}
	u.render(w, r, status, p.name, v)
}

// ---- overview

type overviewData struct {
	PendingContracts  count
	ApprovedContracts count
	PendingRequests   count
	Devices           count
	Secrets           count
	Runs              []*contractualv1.AuditEvent
	Verify            *contractualv1.VerifyResponse
}

func (u *UI) overviewPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, page{name: "overview", title: "Overview", nav: "overview", load: u.loadOverview}, http.StatusOK, "", nil)
}

// loadOverview counts each list up to countPage: a page of each, however
// long the lists are.
func (u *UI) loadOverview(ctx context.Context, _ *http.Request, _ *session) (any, error) {
	var d overviewData
	for st, c := range map[contractualv1.ContractState]*count{
		contractualv1.ContractState_CONTRACT_STATE_PENDING:  &d.PendingContracts,
		contractualv1.ContractState_CONTRACT_STATE_APPROVED: &d.ApprovedContracts,
	} {
		cs, err := u.policy.ListContracts(ctx, &contractualv1.ListContractsRequest{State: st, PageSize: countPage})
		if err != nil {
			return nil, err
		}
		*c = count{len(cs.GetRecords()), cs.GetNextPageToken() != ""}
	}
	reqs, err := u.pairing.ListPairingRequests(ctx, &contractualv1.ListPairingRequestsRequest{PageSize: countPage})
	if err != nil {
		return nil, err
	}
	d.PendingRequests = count{len(reqs.GetRequests()), reqs.GetNextPageToken() != ""}
	devs, err := u.pairing.ListDevices(ctx, &contractualv1.ListDevicesRequest{State: contractualv1.DeviceState_DEVICE_STATE_ACTIVE, PageSize: countPage})
	if err != nil {
		return nil, err
	}
	d.Devices = count{len(devs.GetDevices()), devs.GetNextPageToken() != ""}
	secs, err := u.broker.ListSecrets(ctx, &contractualv1.ListSecretsRequest{PageSize: countPage})
	if err != nil {
		return nil, err
	}
	d.Secrets = count{len(secs.GetSecrets()), secs.GetNextPageToken() != ""}
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
	// Pending is the first page of the pending contracts, shown above the
	// list when it is unfiltered and at its first page.
	Pending     []*contractualv1.ContractRecord
	MorePending bool
	// Contracts is the page of the list, newest first.
	Contracts []*contractualv1.ContractRecord
	Pager     pager
	// Filters, as the filter form shows them.
	Prefix, State, Tool string
	Filtered            bool
	States              []string
}

// contractStates are the states the filter offers.
var contractStates = []string{"pending", "approved", "rejected", "revoked"}

func (u *UI) contractsPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, page{name: "contracts", title: "Contracts", nav: "contracts", load: u.loadContracts}, http.StatusOK, "", nil)
}

func (u *UI) loadContracts(ctx context.Context, r *http.Request, _ *session) (any, error) {
	pos := listPosOf(r, "/ui/contracts", "prefix", "state", "tool")
	d := contractsData{
		Prefix: pos.filters.Get("prefix"), State: pos.filters.Get("state"), Tool: pos.filters.Get("tool"),
		Filtered: pos.filtered(), States: contractStates,
	}
	var st contractualv1.ContractState
	if d.State != "" {
		v, ok := contractualv1.ContractState_value["CONTRACT_STATE_"+strings.ToUpper(d.State)]
		if !ok || v == 0 {
			return nil, errs.E(errs.Invalid, "state must be one of %s", strings.Join(contractStates, ", "))
		}
		st = contractualv1.ContractState(v)
	}
	resp, err := u.policy.ListContracts(ctx, &contractualv1.ListContractsRequest{
		NamePrefix: d.Prefix, State: st, Tool: d.Tool, PageSize: listPage, PageToken: pos.token,
	})
	if err != nil {
		return nil, err
	}
	d.Contracts, d.Pager = resp.GetRecords(), pos.pager(resp.GetNextPageToken())
	if !d.Filtered && pos.token == "" {
		pend, err := u.policy.ListContracts(ctx, &contractualv1.ListContractsRequest{
			State: contractualv1.ContractState_CONTRACT_STATE_PENDING, PageSize: listPage,
		})
		if err != nil {
			return nil, err
		}
		d.Pending, d.MorePending = pend.GetRecords(), pend.GetNextPageToken() != ""
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
	Requests     []*contractualv1.PairingRequest
	MoreRequests bool
	Devices      []deviceRow
	Pager        pager
	// Filters, as the filter form shows them.
	State, Scope string
	States       []string
	Scopes       []string
}

type deviceRow struct {
	*contractualv1.Device
	Revoked bool
	Expired bool
	This    bool
}

// deviceStates are the states the filter offers.
var deviceStates = []string{"active", "revoked", "expired"}

func (u *UI) devicesPageSpec() page {
	return page{name: "devices", title: "Devices", nav: "devices", load: u.loadDevices}
}

func (u *UI) devicesPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, u.devicesPageSpec(), http.StatusOK, "", nil)
}

func (u *UI) loadDevices(ctx context.Context, r *http.Request, s *session) (any, error) {
	pos := listPosOf(r, "/ui/devices", "state", "scope")
	d := devicesData{State: pos.filters.Get("state"), Scope: pos.filters.Get("scope"), States: deviceStates, Scopes: pairing.ScopeNames()}
	var st contractualv1.DeviceState
	if d.State != "" {
		v, ok := contractualv1.DeviceState_value["DEVICE_STATE_"+strings.ToUpper(d.State)]
		if !ok || v == 0 {
			return nil, errs.E(errs.Invalid, "state must be one of %s", strings.Join(deviceStates, ", "))
		}
		st = contractualv1.DeviceState(v)
	}
	reqs, err := u.pairing.ListPairingRequests(ctx, &contractualv1.ListPairingRequestsRequest{PageSize: listPage})
	if err != nil {
		return nil, err
	}
	d.Requests, d.MoreRequests = reqs.GetRequests(), reqs.GetNextPageToken() != ""
	devs, err := u.pairing.ListDevices(ctx, &contractualv1.ListDevicesRequest{State: st, Scope: d.Scope, PageSize: listPage, PageToken: pos.token})
	if err != nil {
		return nil, err
	}
	d.Pager = pos.pager(devs.GetNextPageToken())
	for _, dev := range devs.GetDevices() {
		d.Devices = append(d.Devices, deviceRow{
			Device: dev, Revoked: dev.GetRevokedAt() != nil, Expired: !dev.GetExpiresAt().AsTime().After(u.cfg.Now()),
			This: dev.GetId() == s.DeviceID,
		})
	}
	// On each page, active devices first, this browser at the top.
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
	Pager   pager
	// Prefix is the name filter, as the filter form shows it.
	Prefix string
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

func (u *UI) loadSecrets(ctx context.Context, r *http.Request, _ *session) (any, error) {
	pos := listPosOf(r, "/ui/secrets", "prefix")
	d := secretsData{Prefix: pos.filters.Get("prefix"), MaxValue: secret.MaxValueBytes}
	resp, err := u.broker.ListSecrets(ctx, &contractualv1.ListSecretsRequest{NamePrefix: d.Prefix, PageSize: listPage, PageToken: pos.token})
	if err != nil {
		return nil, err
	}
	d.Secrets, d.Pager = resp.GetSecrets(), pos.pager(resp.GetNextPageToken())
	if d.Missing, err = u.missingSecrets(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// missingSecrets lists the secrets that pending or approved contracts
// inject but that are not stored. It reads every such contract and every
// secret's name, a page of 500 at a time: unlike the lists, it costs what
// those hold.
func (u *UI) missingSecrets(ctx context.Context) ([]missingSecret, error) {
	have := map[string]bool{}
	err := allPages(func(tok string) (string, error) {
		resp, err := u.broker.ListSecrets(ctx, &contractualv1.ListSecretsRequest{PageSize: paging.MaxSize, PageToken: tok})
		for _, m := range resp.GetSecrets() {
			have[m.GetName()] = true
		}
		return resp.GetNextPageToken(), err
	})
	if err != nil {
		return nil, err
	}
	wanted := map[string][]string{}
	var names []string
	for _, st := range []contractualv1.ContractState{contractualv1.ContractState_CONTRACT_STATE_PENDING, contractualv1.ContractState_CONTRACT_STATE_APPROVED} {
		err := allPages(func(tok string) (string, error) {
			cs, err := u.policy.ListContracts(ctx, &contractualv1.ListContractsRequest{State: st, PageSize: paging.MaxSize, PageToken: tok})
			for _, rec := range cs.GetRecords() {
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
			return cs.GetNextPageToken(), err
		})
		if err != nil {
			return nil, err
		}
	}
	slices.Sort(names)
	var out []missingSecret
	for _, n := range names {
		out = append(out, missingSecret{Name: n, Contracts: wanted[n]})
	}
	return out, nil
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
