package ui

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/secret"
)

// formError is a form that cannot be accepted: its status and message.
type formError struct {
	status int
	msg    string
}

// field returns the posted field name, refusing it when repeated, not
// UTF-8 or longer than max characters. what names it in messages.
func field(r *http.Request, name, what string, max int) (string, *formError) {
	vs := r.PostForm[name]
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", &formError{http.StatusBadRequest, "The form sent " + what + " more than once."}
	case !utf8.ValidString(vs[0]):
		return "", &formError{http.StatusBadRequest, what + " is not valid UTF-8."}
	case utf8.RuneCountInString(vs[0]) > max:
		return "", &formError{http.StatusBadRequest, what + " is longer than " + strconv.Itoa(max) + " characters."}
	}
	return vs[0], nil
}

// reasonField reads the reason of a decision on a contract: at most
// maxReasonRunes characters, line breaks as "\n", no other control
// characters but tabs.
func reasonField(r *http.Request, name string, required bool) (string, *formError) {
	v, fe := field(r, name, "The reason", maxReasonRunes)
	if fe != nil {
		return "", fe
	}
	v = strings.TrimSpace(strings.ReplaceAll(v, "\r\n", "\n"))
	switch {
	case required && v == "":
		return "", &formError{http.StatusBadRequest, "A reason is required to reject a contract."}
	case strings.ContainsFunc(v, func(c rune) bool { return unicode.IsControl(c) && c != '\n' && c != '\t' }):
		return "", &formError{http.StatusBadRequest, "The reason contains control characters."}
	}
	return v, nil
}

// contractAction is one decision on a contract.
type contractAction struct {
	verb, done string
	// field is the reason's form field.
	field          string
	reasonRequired bool
	call           func(ctx context.Context, u *UI, digest, reason string) error
}

// contractActions are the decisions the contract page posts.
var contractActions = []contractAction{
	{verb: "approve", done: "approved", field: "reason", call: func(ctx context.Context, u *UI, d, reason string) error {
		_, err := u.policy.Approve(ctx, &contractualv1.ApproveRequest{Digest: d, Reason: reason})
		return err
	}},
	{verb: "reject", done: "rejected", field: "reason", reasonRequired: true, call: func(ctx context.Context, u *UI, d, reason string) error {
		_, err := u.policy.Reject(ctx, &contractualv1.RejectRequest{Digest: d, Reason: reason})
		return err
	}},
	{verb: "revoke", done: "revoked", field: "revoke_reason", call: func(ctx context.Context, u *UI, d, reason string) error {
		_, err := u.policy.Revoke(ctx, &contractualv1.RevokeRequest{Digest: d, Reason: reason})
		return err
	}},
}

// contractAction handles POST /ui/contracts/{digest}/{verb}: on success a
// redirect back to the contract with a flash message; on failure the
// contract page again, with the error and its status.
func (u *UI) contractAction(a contractAction) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		digest := r.PathValue("digest")
		if !digestOK(digest) {
			u.failErr(w, r, s, badDigest)
			return
		}
		reason, fe := reasonField(r, a.field, a.reasonRequired)
		keep := map[string]string{}
		if fe == nil {
			keep[a.field] = reason
		} else if v := r.PostForm.Get(a.field); utf8.ValidString(v) && utf8.RuneCountInString(v) <= 4*maxReasonRunes {
			keep[a.field] = v
		}
		if fe != nil {
			u.show(w, r, s, u.contractPageSpec(), fe.status, fe.msg, keep)
			return
		}
		if err := a.call(s.ctx, u, digest, reason); err != nil {
			status, msg := u.publicError(r, err)
			u.show(w, r, s, u.contractPageSpec(), status, msg, keep)
			return
		}
		http.Redirect(w, r, "/ui/contracts/"+digest+"?done="+a.done, http.StatusSeeOther)
	}
}

// requestAction approves or rejects a pairing request by its code.
func (u *UI) requestAction(approve bool) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		code := r.PathValue("code")
		if code == "" || len(code) > maxCodeLen {
			u.show(w, r, s, u.devicesPageSpec(), http.StatusBadRequest, "That is not a pairing request code.", nil)
			return
		}
		var err error
		done := "request-approved"
		if approve {
			_, err = u.pairing.ApprovePairing(s.ctx, &contractualv1.ApprovePairingRequest{Code: code})
		} else {
			done = "request-rejected"
			_, err = u.pairing.RejectPairing(s.ctx, &contractualv1.RejectPairingRequest{Code: code})
		}
		if err != nil {
			status, msg := u.publicError(r, err)
			u.show(w, r, s, u.devicesPageSpec(), status, msg, nil)
			return
		}
		http.Redirect(w, r, "/ui/devices?done="+done, http.StatusSeeOther)
	}
}

// revokeDevice revokes a device (scope owner); revoking this browser's
// own device unpairs it (any scope), which signs it out.
func (u *UI) revokeDevice(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if id == "" || len(id) > maxIDLen {
		u.show(w, r, s, u.devicesPageSpec(), http.StatusBadRequest, "That is not a device id.", nil)
		return
	}
	var err error
	if id == s.DeviceID {
		_, err = u.pairing.Unpair(s.ctx, &contractualv1.UnpairRequest{})
	} else {
		_, err = u.pairing.RevokeDevice(s.ctx, &contractualv1.RevokeDeviceRequest{DeviceId: id})
	}
	if err != nil {
		status, msg := u.publicError(r, err)
		u.show(w, r, s, u.devicesPageSpec(), status, msg, nil)
		return
	}
	if id == s.DeviceID {
		u.clearCookie(w, r)
		http.Redirect(w, r, "/ui/pair?done=signed-out", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/ui/devices?done=device-revoked", http.StatusSeeOther)
}

// badSecretName is the message for a malformed secret name; it does not
// repeat what was typed (it might be a value pasted in the wrong field).
const badSecretName = "The secret name must be an uppercase letter followed by up to 63 uppercase letters, digits or underscores, e.g. GITHUB_TOKEN."

// putSecret stores a new version of a secret. The value is never shown
// again: not after success, not when the form comes back with an error.
func (u *UI) putSecret(w http.ResponseWriter, r *http.Request, s *session) {
	fail := func(status int, msg string, keep map[string]string) {
		u.show(w, r, s, u.secretsPageSpec(), status, msg, keep)
	}
	name, fe := field(r, "name", "The secret name", 64)
	if fe != nil {
		fail(fe.status, fe.msg, nil)
		return
	}
	name = strings.TrimSpace(name)
	if !secret.ValidName(name) {
		fail(http.StatusBadRequest, badSecretName, nil)
		return
	}
	keep := map[string]string{"name": name}
	vs := r.PostForm["value"]
	switch {
	case len(vs) != 1 || vs[0] == "":
		fail(http.StatusBadRequest, "The secret value is empty.", keep)
		return
	case len(vs[0]) > secret.MaxValueBytes:
		fail(http.StatusBadRequest, "The secret value is "+strconv.Itoa(len(vs[0]))+" bytes, over the "+strconv.Itoa(secret.MaxValueBytes)+" byte limit.", keep)
		return
	}
	resp, err := u.broker.PutSecret(s.ctx, &contractualv1.PutSecretRequest{Name: name, Value: []byte(vs[0])})
	if err != nil {
		status, msg := u.publicError(r, err)
		fail(status, msg, keep)
		return
	}
	v := strconv.FormatUint(uint64(resp.GetSecret().GetVersion()), 10)
	http.Redirect(w, r, "/ui/secrets?done=stored&name="+name+"&version="+v, http.StatusSeeOther)
}

// deleteSecret deletes every version of a secret.
func (u *UI) deleteSecret(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	if !secret.ValidName(name) {
		u.show(w, r, s, u.secretsPageSpec(), http.StatusBadRequest, badSecretName, nil)
		return
	}
	if _, err := u.broker.DeleteSecret(s.ctx, &contractualv1.DeleteSecretRequest{Name: name}); err != nil {
		status, msg := u.publicError(r, err)
		u.show(w, r, s, u.secretsPageSpec(), status, msg, nil)
		return
	}
	http.Redirect(w, r, "/ui/secrets?done=deleted&name="+name, http.StatusSeeOther)
}
