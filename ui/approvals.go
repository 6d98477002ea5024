package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// One-shot call approvals: the list of pending ones, and the page of one,
// where the owner sees the exact call (the tool, the exact input, who
// asked, what the contract lets it reach, when it expires) and approves or
// denies it. The forms are on the page of one approval only, under its
// permissions card.

// approvalRow is a call approval as the pages show it.
type approvalRow struct {
	*contractualv1.CallApproval
	State string
	// Input is the exact canonical input, indented.
	Input string
	// Device is the name of the device that asked, if it is a device
	// this gateway knows.
	Device string
}

type approvalsData struct {
	Approvals []approvalRow
	Pager     pager
	State     string
	States    []string
}

// callStates are the states the approvals filter offers.
var callStates = []string{"pending", "approved", "denied", "used", "expired"}

func (u *UI) approvalsPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, page{name: "approvals", title: "Approvals", nav: "approvals", load: u.loadApprovals}, http.StatusOK, "", nil)
}

func (u *UI) loadApprovals(ctx context.Context, r *http.Request, _ *session) (any, error) {
	pos := listPosOf(r, "/ui/approvals", "state")
	d := approvalsData{State: pos.filters.Get("state"), States: callStates}
	var st contractualv1.CallApprovalState
	if d.State != "" {
		v, ok := contractualv1.CallApprovalState_value["CALL_APPROVAL_STATE_"+strings.ToUpper(d.State)]
		if !ok || v == 0 {
			return nil, errs.E(errs.Invalid, "state must be one of %s", strings.Join(callStates, ", "))
		}
		st = contractualv1.CallApprovalState(v)
	}
	resp, err := u.policy.ListCallApprovals(ctx, &contractualv1.ListCallApprovalsRequest{State: st, PageSize: listPage, PageToken: pos.token})
	if err != nil {
		return nil, err
	}
	names := u.deviceNames(ctx)
	for _, a := range resp.GetApprovals() {
		d.Approvals = append(d.Approvals, newApprovalRow(a, names))
	}
	d.Pager = pos.pager(resp.GetNextPageToken())
	return d, nil
}

// approvalData is the page of one call approval.
type approvalData struct {
	approvalRow
	Card     contract.Card
	Contract *contractualv1.ContractRecord
	Pending  bool
	// Own is set when this browser's device asked for the call: it may
	// deny it, never approve it.
	Own bool
}

// approvalPageSpec is the page of one call approval.
func (u *UI) approvalPageSpec() page {
	return page{name: "approval", title: "Call approval", nav: "approvals", load: u.loadApproval}
}

func (u *UI) approvalPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, u.approvalPageSpec(), http.StatusOK, "", nil)
}

func (u *UI) loadApproval(ctx context.Context, r *http.Request, s *session) (any, error) {
	id := r.PathValue("id")
	if !approvalIDOK(id) {
		return nil, badApprovalID
	}
	resp, err := u.policy.GetCallApproval(ctx, &contractualv1.GetCallApprovalRequest{Id: id})
	if err != nil {
		return nil, err
	}
	a := resp.GetApproval()
	rec, err := u.policy.GetContract(ctx, &contractualv1.GetContractRequest{Digest: a.GetContractDigest()})
	if err != nil {
		return nil, err
	}
	return approvalData{
		approvalRow: newApprovalRow(a, u.deviceNames(ctx)),
		Card:        contract.NewCard(rec.GetRecord().GetContract()),
		Contract:    rec.GetRecord(),
		Pending:     a.GetState() == contractualv1.CallApprovalState_CALL_APPROVAL_STATE_PENDING,
		Own:         a.GetPrincipal() == s.Principal,
	}, nil
}

// newApprovalRow renders a for the pages; names maps device ids to names.
func newApprovalRow(a *contractualv1.CallApproval, names map[string]string) approvalRow {
	row := approvalRow{CallApproval: a, State: strings.ToLower(strings.TrimPrefix(a.GetState().String(), "CALL_APPROVAL_STATE_"))}
	var b bytes.Buffer
	if json.Indent(&b, a.GetCanonicalInput(), "", "  ") == nil {
		row.Input = b.String()
	} else {
		row.Input = string(a.GetCanonicalInput())
	}
	if id, ok := strings.CutPrefix(a.GetPrincipal(), "device:"); ok {
		row.Device = names[id]
	}
	return row
}

// deviceNames maps the ids of the first page of devices to their names,
// for "who asked"; a device that cannot be listed shows by its principal.
func (u *UI) deviceNames(ctx context.Context) map[string]string {
	names := map[string]string{}
	resp, err := u.pairing.ListDevices(ctx, &contractualv1.ListDevicesRequest{PageSize: 500})
	if err != nil {
		return names
	}
	for _, d := range resp.GetDevices() {
		names[d.GetId()] = d.GetName()
	}
	return names
}

// approvalIDOK reports whether id looks like a call approval id: 32
// lowercase hex digits.
func approvalIDOK(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// badApprovalID is the message for a malformed approval id in a URL.
var badApprovalID = errs.E(errs.Invalid, "a call approval id is 32 lowercase hex digits")

// callAction handles POST /ui/approvals/{id}/approve and .../deny: on
// success a redirect back to the approval with a flash message; on
// failure its page again, with the error and its status.
func (u *UI) callAction(approve bool) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		id := r.PathValue("id")
		if !approvalIDOK(id) {
			u.failErr(w, r, s, badApprovalID)
			return
		}
		reason, fe := reasonField(r, "reason", false)
		if fe != nil {
			u.show(w, r, s, u.approvalPageSpec(), fe.status, fe.msg, nil)
			return
		}
		keep := map[string]string{"reason": reason}
		var err error
		done := "call-approved"
		if approve {
			_, err = u.policy.ApproveCall(s.ctx, &contractualv1.ApproveCallRequest{Id: id, Reason: reason})
		} else {
			done = "call-denied"
			_, err = u.policy.DenyCall(s.ctx, &contractualv1.DenyCallRequest{Id: id, Reason: reason})
		}
		if err != nil {
			status, msg := u.publicError(r, err)
			u.show(w, r, s, u.approvalPageSpec(), status, msg, keep)
			return
		}
		http.Redirect(w, r, "/ui/approvals/"+id+"?done="+done, http.StatusSeeOther)
	}
}
