package ui

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pairing"
)

// maxJSONBytes caps the body of a pairing endpoint.
const maxJSONBytes = 16 << 10

// Field caps of the pairing endpoints, generous over what is valid, so
// that a malformed value gets pairing's precise message while an absurd
// one is refused before it goes anywhere.
const (
	maxDeviceName = pairing.MaxNameLen
	maxCodeLen    = 32
	maxB64Len     = 128
	maxIDLen      = 64
)

// isJSONPath reports whether path is an endpoint that answers in JSON: a
// pairing endpoint, or the audit checkpoint check.
func isJSONPath(path string) bool {
	return strings.HasPrefix(path, "/ui/pair/") || path == checkpointPath
}

// pairPage is the pairing page; it works without a session. A browser
// that is already signed in is told so; one whose session expired is told
// that.
func (u *UI) pairPage(w http.ResponseWriter, r *http.Request) {
	s, hadCookie, err := u.session(r)
	v := view{Title: "Pair this browser", Nav: "pair", Data: pairData{Scopes: browserScopes}}
	if err != nil {
		s = nil
		if hadCookie && (errs.Is(err, errs.Unauthenticated) || errors.Is(err, pairing.ErrOtherNode)) {
			u.clearCookie(w, r)
		}
		switch {
		case errors.Is(err, pairing.ErrTokenExpired):
			v.Flash = flashes["session-expired"]
		case errors.Is(err, pairing.ErrOtherNode):
			v.Flash = flashes["session-other-node"]
		}
	}
	v.Session = s
	u.render(w, r, http.StatusOK, "pair", v)
}

// pairData is what the pairing page offers.
type pairData struct{ Scopes []scopeChoice }

// scopeChoice is a choice of scopes for a browser, with what it means.
type scopeChoice struct{ Value, Label string }

// browserScopes are the scopes the pairing page offers a browser, the
// first being the default. A browser never calls tools, so invoke and
// publish are not offered (the API still accepts them).
var browserScopes = []scopeChoice{
	{"owner", "owner: everything (approve, secrets, devices)"},
	{"approve", "approve: decide contracts and pairing requests, see everything, no secrets or devices"},
	{"read", "read: see contracts, devices, runs and the audit log; change nothing"},
}

// jsonError is a failed request's status and message.
type jsonError struct {
	status int
	msg    string
}

func (e *jsonError) Error() string { return e.msg }

// readJSON decodes the body of a pairing request into v: Content-Type
// application/json, at most maxJSONBytes, one JSON object with no unknown
// fields.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return &jsonError{http.StatusUnsupportedMediaType, "send the request as Content-Type: application/json"}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case isTooLarge(err):
			return &jsonError{http.StatusRequestEntityTooLarge, "the request body is over 16 KiB"}
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return &jsonError{http.StatusBadRequest, "field " + typeErr.Field + " must be a " + typeErr.Type.String()}
		case errors.As(err, &typeErr):
			return &jsonError{http.StatusBadRequest, "the request body must be a JSON object"}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return &jsonError{http.StatusBadRequest, "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")}
		case errors.Is(err, io.EOF):
			return &jsonError{http.StatusBadRequest, "the request body is empty; send a JSON object"}
		}
		return &jsonError{http.StatusBadRequest, "the request body is not valid JSON"}
	}
	if dec.More() {
		return &jsonError{http.StatusBadRequest, "the request body has data after its JSON object"}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if isTooLarge(err) {
			return &jsonError{http.StatusRequestEntityTooLarge, "the request body is over 16 KiB"}
		}
		return &jsonError{http.StatusBadRequest, "the request body has data after its JSON object"}
	}
	return nil
}

// writeJSON answers with v.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeJSONError answers {"error": msg}.
func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// jsonFail answers a failed pairing request: a *jsonError as it is, a
// service error with its mapped status.
func (u *UI) jsonFail(w http.ResponseWriter, r *http.Request, err error) {
	var je *jsonError
	if errors.As(err, &je) {
		writeJSONError(w, je.status, je.msg)
		return
	}
	status, msg := u.publicError(r, err)
	writeJSONError(w, status, msg)
}

// checkField refuses an over-long or non-UTF-8 field.
func checkField(name, v string, max int) error {
	switch {
	case !utf8.ValidString(v):
		return &jsonError{http.StatusBadRequest, name + " is not valid UTF-8"}
	case utf8.RuneCountInString(v) > max:
		return &jsonError{http.StatusBadRequest, name + " is too long"}
	}
	return nil
}

// decodeB64 decodes a standard base64 field (padding included).
func decodeB64(name, v string) ([]byte, error) {
	if v == "" {
		return nil, &jsonError{http.StatusBadRequest, name + " is required"}
	}
	if len(v) > maxB64Len {
		return nil, &jsonError{http.StatusBadRequest, name + " is too long"}
	}
	b, err := base64.StdEncoding.Strict().DecodeString(v)
	if err != nil {
		return nil, &jsonError{http.StatusBadRequest, name + " is not valid base64 (standard alphabet, with padding)"}
	}
	return b, nil
}

type beginRequest struct {
	Name      string   `json:"name"`
	PublicKey string   `json:"public_key"`
	Scopes    []string `json:"scopes"`
}

type beginResponse struct {
	Code      string   `json:"code"`
	DeviceID  string   `json:"device_id"`
	Nonce     string   `json:"nonce"`
	ExpiresAt string   `json:"expires_at"`
	Scopes    []string `json:"scopes"`
}

// maxScopes bounds the scopes field of a begin request.
const maxScopes = 8

// pairBegin asks to pair this browser: POST {"name", "public_key",
// "scopes"} → {"code", "device_id", "nonce", "expires_at", "scopes"}.
// No scopes means owner. Beginning again with the same key replaces the
// browser's live request.
func (u *UI) pairBegin(w http.ResponseWriter, r *http.Request) {
	var req beginRequest
	if err := readJSON(w, r, &req); err != nil {
		u.jsonFail(w, r, err)
		return
	}
	if err := checkField("name", req.Name, maxDeviceName); err != nil {
		u.jsonFail(w, r, err)
		return
	}
	pub, err := decodeB64("public_key", req.PublicKey)
	if err != nil {
		u.jsonFail(w, r, err)
		return
	}
	if len(req.Scopes) > maxScopes {
		u.jsonFail(w, r, &jsonError{http.StatusBadRequest, "scopes has too many entries"})
		return
	}
	for _, sc := range req.Scopes {
		if err := checkField("scopes", sc, maxCodeLen); err != nil {
			u.jsonFail(w, r, err)
			return
		}
	}
	ctx := pairing.WithSource(r.Context(), sourceOf(r))
	resp, err := u.pairing.BeginPairing(ctx, &contractualv1.BeginPairingRequest{
		PublicKey: pub, Name: req.Name, Scopes: req.Scopes, Kind: contractualv1.DeviceKind_DEVICE_KIND_BROWSER,
	})
	if err != nil {
		u.jsonFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, beginResponse{
		Code: resp.GetCode(), DeviceID: resp.GetDeviceId(),
		Nonce:     base64.StdEncoding.EncodeToString(resp.GetNonce()),
		ExpiresAt: resp.GetExpiresAt().AsTime().UTC().Format(time.RFC3339),
		Scopes:    resp.GetScopes(),
	})
}

type setupRequest struct {
	Code      string `json:"code"`
	SetupCode string `json:"setup_code"`
}

// pairSetup approves the first device's request with the setup code the
// server printed: POST {"code", "setup_code"} → {}.
func (u *UI) pairSetup(w http.ResponseWriter, r *http.Request) {
	var req setupRequest
	if err := readJSON(w, r, &req); err != nil {
		u.jsonFail(w, r, err)
		return
	}
	for _, f := range []struct{ name, v string }{{"code", req.Code}, {"setup_code", req.SetupCode}} {
		if f.v == "" {
			u.jsonFail(w, r, &jsonError{http.StatusBadRequest, f.name + " is required"})
			return
		}
		if err := checkField(f.name, f.v, maxCodeLen); err != nil {
			u.jsonFail(w, r, err)
			return
		}
	}
	ctx := pairing.WithSource(r.Context(), sourceOf(r))
	_, err := u.pairing.ApproveWithSetupCode(ctx, &contractualv1.ApproveWithSetupCodeRequest{RequestCode: req.Code, SetupCode: req.SetupCode})
	if err != nil {
		u.jsonFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

type completeRequest struct {
	DeviceID  string `json:"device_id"`
	Nonce     string `json:"nonce"`
	Signature string `json:"signature"`
}

// pairComplete proves possession of the browser's key: POST {"device_id",
// "nonce", "signature"}. On success the device token goes into the session
// cookie (never into the response body) and the answer is {"ok": true};
// while the request awaits approval it is 202 Accepted with "pending": true
// (a routine answer, not an error: the page polls), and a refusal is the
// error's status. A browser that already holds the session of device_id
// (its first completion got through) is answered {"ok": true} without a
// second completion: one proof earns one token, and a repeat is not an
// error for the browser that has it.
func (u *UI) pairComplete(w http.ResponseWriter, r *http.Request) {
	var req completeRequest
	if err := readJSON(w, r, &req); err != nil {
		u.jsonFail(w, r, err)
		return
	}
	if req.DeviceID == "" {
		u.jsonFail(w, r, &jsonError{http.StatusBadRequest, "device_id is required"})
		return
	}
	if err := checkField("device_id", req.DeviceID, maxIDLen); err != nil {
		u.jsonFail(w, r, err)
		return
	}
	nonce, err := decodeB64("nonce", req.Nonce)
	if err != nil {
		u.jsonFail(w, r, err)
		return
	}
	sig, err := decodeB64("signature", req.Signature)
	if err != nil {
		u.jsonFail(w, r, err)
		return
	}
	if s, _, err := u.session(r); err == nil && s.DeviceID == req.DeviceID {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		return
	}
	ctx := pairing.WithSource(r.Context(), sourceOf(r))
	resp, err := u.pairing.CompletePairing(ctx, &contractualv1.CompletePairingRequest{DeviceId: req.DeviceID, Nonce: nonce, Signature: sig})
	if err != nil {
		if errs.Is(err, errs.FailedPrecondition) && strings.Contains(err.Error(), "awaiting approval") {
			writeJSON(w, http.StatusAccepted, map[string]any{"message": err.Error(), "pending": true})
			return
		}
		u.jsonFail(w, r, err)
		return
	}
	u.setCookie(w, r, resp.GetToken(), resp.GetExpiresAt().AsTime())
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}
