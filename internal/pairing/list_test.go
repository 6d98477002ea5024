package pairing

import (
	"slices"
	"strings"
	"testing"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/paging"
)

// listOptions let a test pair and ask many times within a minute.
var listOptions = Config{BeginsPerMinute: 1000, BeginsPerSourcePerMinute: 1000, MaxPending: 1000}

// walkDevices follows ListDevices' page tokens from req, calling between
// after every page but the last, and returns the device ids listed.
func walkDevices(t *testing.T, svc *Service, req *contractualv1.ListDevicesRequest, between func()) []string {
	t.Helper()
	var ids []string
	for {
		resp, err := svc.ListDevices(t.Context(), req)
		if err != nil {
			t.Fatalf("ListDevices(%v): %v", req, err)
		}
		if req.GetPageSize() > 0 && len(resp.GetDevices()) > int(req.GetPageSize()) {
			t.Fatalf("a page of %d devices for page_size %d", len(resp.GetDevices()), req.GetPageSize())
		}
		for _, d := range resp.GetDevices() {
			ids = append(ids, d.GetId())
		}
		if resp.GetNextPageToken() == "" {
			return ids
		}
		if between != nil {
			between()
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// TestListDevicesPages: following the tokens visits every device exactly
// once, in pairing order, while devices are paired between pages (at the
// same instant as the others: rowid breaks the tie), and the pages hold
// page_size devices.
func TestListDevicesPages(t *testing.T) {
	f := newFixture(t, listOptions)
	svc := NewService(f.s)
	first, _ := f.pairFirst()
	for range 11 {
		f.pairBy(first, "d")
	}
	added := 0
	got := walkDevices(t, svc, &contractualv1.ListDevicesRequest{PageSize: 5}, func() {
		f.pairBy(first, "between")
		added++
	})
	all, err := f.s.Devices(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, d := range all {
		want = append(want, d.ID)
	}
	if len(want) != 12+added || !slices.Equal(got, want) {
		t.Fatalf("the pages listed %d devices\n%v\nwant the %d in pairing order\n%v", len(got), got, len(want), want)
	}
	resp, err := svc.ListDevices(f.ctx, &contractualv1.ListDevicesRequest{})
	if err != nil || len(resp.GetDevices()) != len(want) || resp.GetNextPageToken() != "" {
		t.Fatalf("no page size (50): %d devices, token %q, %v", len(resp.GetDevices()), resp.GetNextPageToken(), err)
	}
	_, err = svc.ListDevices(f.ctx, &contractualv1.ListDevicesRequest{PageSize: -3})
	if errs.KindOf(err) != errs.Invalid || !strings.Contains(err.Error(), "page_size -3") {
		t.Fatalf("negative page size: %v", err)
	}
}

// TestListDevicesFilters: state (active, revoked, expired) and scope
// (expanded: read lists approve and owner devices too), paged.
func TestListDevicesFilters(t *testing.T) {
	opts := listOptions
	opts.Client = Lifetime{Idle: 10 * time.Hour}
	f := newFixture(t, opts)
	svc := NewService(f.s)
	owner, _ := f.pairFirst()
	pairScoped := func(s Scopes) device {
		d := newDevice(t)
		r := f.beginScopes(d, "d", s)
		if err := f.s.Approve(f.ctx, r.Code, Principal(owner.id)); err != nil {
			t.Fatal(err)
		}
		f.complete(d, r)
		return d
	}
	old := pairScoped(ScopeInvoke) // expires: never used after pairing
	f.clk.Advance(6 * time.Hour)
	reader := pairScoped(ScopeRead)
	approver := pairScoped(ScopeApprove)
	agent := pairScoped(ScopeInvoke | ScopePublish)
	revoked := pairScoped(ScopeRead)
	if err := f.s.Revoke(f.ctx, revoked.id, Principal(owner.id)); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(5 * time.Hour) // old's token expired; owner's too (set up 11 h ago)
	for _, c := range []struct {
		name  string
		state contractualv1.DeviceState
		scope string
		want  []device
	}{
		{"all", 0, "", []device{owner, old, reader, approver, agent, revoked}},
		{"active", contractualv1.DeviceState_DEVICE_STATE_ACTIVE, "", []device{reader, approver, agent}},
		{"revoked", contractualv1.DeviceState_DEVICE_STATE_REVOKED, "", []device{revoked}},
		{"expired", contractualv1.DeviceState_DEVICE_STATE_EXPIRED, "", []device{owner, old}},
		{"invoke", 0, "invoke", []device{owner, old, agent}},
		{"read", 0, "read", []device{owner, reader, approver, revoked}},
		{"active read", contractualv1.DeviceState_DEVICE_STATE_ACTIVE, "READ", []device{reader, approver}},
		{"active owner", contractualv1.DeviceState_DEVICE_STATE_ACTIVE, "owner", nil},
	} {
		got := walkDevices(t, svc, &contractualv1.ListDevicesRequest{PageSize: 1, State: c.state, Scope: c.scope}, nil)
		var want []string
		for _, d := range c.want {
			want = append(want, d.id)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", c.name, got, want)
		}
	}
	for _, req := range []*contractualv1.ListDevicesRequest{
		{State: 7},
		{Scope: "root"},
		{Scope: "invoke,read"},
	} {
		if _, err := svc.ListDevices(f.ctx, req); errs.KindOf(err) != errs.Invalid {
			t.Errorf("ListDevices(%v): %v, want invalid", req, err)
		}
	}
}

// TestListTokens: a garbage token, another list's and one made for other
// filters are refused; a token works only with its own filters.
func TestListTokens(t *testing.T) {
	f := newFixture(t, listOptions)
	svc := NewService(f.s)
	first, _ := f.pairFirst()
	f.pairBy(first, "a")
	f.pairBy(first, "b")
	resp, err := svc.ListDevices(f.ctx, &contractualv1.ListDevicesRequest{PageSize: 1, Scope: "owner"})
	if err != nil || resp.GetNextPageToken() == "" {
		t.Fatalf("first page: %v %v", resp, err)
	}
	tok := resp.GetNextPageToken()
	for name, req := range map[string]*contractualv1.ListDevicesRequest{
		"garbage":       {PageToken: "%%%"},
		"other filters": {PageToken: tok, Scope: "read"},
		"no filters":    {PageToken: tok},
		"contracts'":    {PageToken: paging.Encode("contracts", "", 3)},
	} {
		if _, err := svc.ListDevices(f.ctx, req); errs.KindOf(err) != errs.Invalid || !strings.Contains(err.Error(), "page_token") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := svc.ListPairingRequests(f.ctx, &contractualv1.ListPairingRequestsRequest{PageToken: tok}); errs.KindOf(err) != errs.Invalid {
		t.Errorf("a devices token for pairing requests: %v", err)
	}
	if rest, err := svc.ListDevices(f.ctx, &contractualv1.ListDevicesRequest{PageToken: tok, Scope: "owner"}); err != nil || len(rest.GetDevices()) != 2 {
		t.Fatalf("the token with its filters: %v %v", rest, err)
	}
}

// TestListPairingRequestsPages: following the tokens visits every live
// request exactly once, oldest first, while devices ask between pages; an
// approved request stays listed until completed, a rejected one does not.
func TestListPairingRequestsPages(t *testing.T) {
	f := newFixture(t, listOptions)
	svc := NewService(f.s)
	owner, _ := f.pairFirst()
	var want []string
	for range 7 {
		want = append(want, f.begin(newDevice(t), "asking").Code)
	}
	if err := f.s.Approve(f.ctx, want[2], Principal(owner.id)); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Reject(f.ctx, want[3], Principal(owner.id)); err != nil {
		t.Fatal(err)
	}
	want = slices.Delete(want, 3, 4)
	var got []string
	req := &contractualv1.ListPairingRequestsRequest{PageSize: 2}
	for {
		resp, err := svc.ListPairingRequests(f.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetRequests() {
			got = append(got, r.GetCode())
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		want = append(want, f.begin(newDevice(t), "between").Code)
		req.PageToken = resp.GetNextPageToken()
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the pages listed %v, want %v", got, want)
	}
	if _, err := svc.ListPairingRequests(f.ctx, &contractualv1.ListPairingRequestsRequest{PageSize: -1}); errs.KindOf(err) != errs.Invalid {
		t.Fatalf("negative page size: %v", err)
	}
}
