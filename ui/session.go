package ui

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"mime"
	"net/http"
	"strings"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/secret"
)

// The session cookie is this browser's device credential, the equivalent
// of the CLI's device.token file: the private key that earned it is gone
// as soon as the pairing page is left. Its token expires as pairing's
// browser Lifetime says (by default after 30 days unused, and 90 days after
// pairing at the latest), renewed on use; the cookie follows: every
// signed-in response sets its Max-Age to the token's remaining life plus
// cookieGrace. The grace lets the browser bring an expired token back once
// more, so that the UI can say that the session expired, and why, instead
// of showing a bare pairing page. Expiry bounds a stolen or forgotten
// cookie; revocation, which holds at the next request because every
// request re-authenticates the token, is what stops one at once.
const cookieGrace = 7 * 24 * time.Hour

// maxTokenLen bounds what is passed to the authenticator from a cookie.
const maxTokenLen = 256

// session is a signed-in browser.
type session struct {
	// ctx carries the principal, the identity (for the guards) and the
	// caller's source for service calls.
	ctx       context.Context
	Principal string
	DeviceID  string
	Name      string
	Scopes    pairing.Scopes
	// CSRF is the form token of this session.
	CSRF string
	// token and expires are the cookie's value and the token's expiry.
	token   string
	expires time.Time
}

// Can reports whether the session's device holds scope name (for the
// templates, which show only what it may do).
func (s *session) Can(name string) bool {
	want, err := pairing.ParseScopes(name)
	return err == nil && s.Scopes.Has(want)
}

// CanGrant reports whether the session's device may approve a pairing
// request for scopes: it needs scope approve and every scope asked for.
func (s *session) CanGrant(scopes []string) bool {
	want, err := pairing.ParseScopes(scopes...)
	return err == nil && s.Scopes.Has(want|pairing.ScopeApprove)
}

// sessionHandler is a handler that needs a signed-in browser.
type sessionHandler func(w http.ResponseWriter, r *http.Request, s *session)

// authed wraps h: it authenticates the session cookie on every request
// (so that a revoked or expired device is signed out at once), renews the
// cookie and, for a POST, checks the form's CSRF token before h runs.
// Without a valid session, a GET is redirected to the pairing page (which
// says why when the cookie was refused) and anything else gets 401; an
// invalid cookie is cleared.
func (u *UI) authed(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, hadCookie, err := u.session(r)
		if err != nil {
			// A token from another tailnet node than its own is as good
			// as none here.
			otherNode := errors.Is(err, pairing.ErrOtherNode)
			signedOut := errs.Is(err, errs.Unauthenticated) || otherNode
			if hadCookie && signedOut {
				u.clearCookie(w, r)
			}
			expired := errors.Is(err, pairing.ErrTokenExpired)
			switch {
			case !signedOut:
				u.failErr(w, r, nil, err)
			case r.Method == http.MethodGet || r.Method == http.MethodHead:
				to := "/ui/pair"
				switch {
				case expired:
					to += "?done=session-expired"
				case otherNode:
					to += "?done=session-other-node"
				case hadCookie:
					to += "?done=session-ended"
				}
				http.Redirect(w, r, to, http.StatusSeeOther)
			case expired:
				u.fail(w, r, nil, http.StatusUnauthorized, "This browser's session expired: "+err.Error()+". Pair it again on the pairing page; nothing was changed.")
			default:
				u.fail(w, r, nil, http.StatusUnauthorized, "This browser is not signed in (or its device was revoked). Pair it again on the pairing page; nothing was changed.")
			}
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			u.setCookie(w, r, s.token, s.expires) // the cookie follows the renewed token
		}
		if r.Method == http.MethodPost {
			if status, msg := u.parseForm(w, r); status != 0 {
				u.fail(w, r, s, status, msg)
				return
			}
			if !u.checkCSRF(r, s) {
				u.fail(w, r, s, http.StatusForbidden, "Refused: the form's security token (CSRF) is missing or wrong. Reload the page and try again; nothing was changed.")
				return
			}
		}
		h(w, r, s)
	}
}

// session authenticates the request's cookie. hadCookie reports whether
// there was one; err is errs.Unauthenticated when there is no valid one.
func (u *UI) session(r *http.Request) (s *session, hadCookie bool, err error) {
	c, err := r.Cookie(u.cookieName)
	if err != nil || c.Value == "" {
		return nil, false, errs.E(errs.Unauthenticated, "not signed in")
	}
	if len(c.Value) > maxTokenLen {
		return nil, true, errs.E(errs.Unauthenticated, "not signed in")
	}
	src := sourceOf(r)
	ctx := pairing.WithSource(r.Context(), src)
	id, err := u.cfg.Auth.Authenticate(ctx, c.Value, src)
	if err != nil {
		return nil, true, err
	}
	s = &session{
		ctx:       principal.With(pairing.WithIdentity(ctx, id), id.Principal),
		Principal: id.Principal, Name: id.Name, Scopes: id.Scopes,
		CSRF: u.csrfToken(c.Value), token: c.Value, expires: id.ExpiresAt,
	}
	s.DeviceID, _ = strings.CutPrefix(id.Principal, "device:")
	return s, true, nil
}

// SessionToken returns the token in r's session cookie, or "" if there is
// none: the gateway authenticates it before it lets a request's body be
// read.
func (u *UI) SessionToken(r *http.Request) string {
	c, err := r.Cookie(u.cookieName)
	if err != nil || len(c.Value) > maxTokenLen {
		return ""
	}
	return c.Value
}

// csrfToken is the form token of the session holding token:
// base64url(HMAC-SHA256(key, SHA-256(token))). It reveals nothing of the
// token and cannot be made without the server's key.
func (u *UI) csrfToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	m := hmac.New(sha256.New, u.key)
	m.Write(sum[:])
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF reports whether the posted form carries s's token, exactly
// once, compared in constant time.
func (u *UI) checkCSRF(r *http.Request, s *session) bool {
	got := r.PostForm["csrf"]
	return len(got) == 1 && subtle.ConstantTimeCompare([]byte(got[0]), []byte(s.CSRF)) == 1
}

// Form body caps: every form is small except the secret form, whose value
// may be up to the broker's limit and is URL-encoded (up to 3 bytes per
// byte).
const (
	maxFormBytes       = 64 << 10
	maxSecretFormBytes = 3*secret.MaxValueBytes + 4<<10
)

// parseForm reads a POSTed form, URL-encoded only, within its size cap.
// It returns a status and message on failure, 0 on success.
func (u *UI) parseForm(w http.ResponseWriter, r *http.Request) (int, string) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return http.StatusUnsupportedMediaType, "Refused: forms must be sent as application/x-www-form-urlencoded. Nothing was changed."
	}
	limit := int64(maxFormBytes)
	if r.URL.Path == "/ui/secrets" {
		limit = maxSecretFormBytes
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	if err := r.ParseForm(); err != nil {
		if isTooLarge(err) {
			return http.StatusRequestEntityTooLarge, "Refused: the form is too large. Nothing was changed."
		}
		return http.StatusBadRequest, "Refused: the form could not be read (malformed encoding). Nothing was changed."
	}
	return 0, ""
}

// setCookie gives the browser its session, for as long as the token lasts
// (plus cookieGrace).
func (u *UI) setCookie(w http.ResponseWriter, r *http.Request, token string, expires time.Time) {
	maxAge := int((expires.Sub(u.cfg.Now()) + cookieGrace) / time.Second)
	http.SetCookie(w, &http.Cookie{
		Name: u.cookieName, Value: token, Path: "/", MaxAge: max(maxAge, 1),
		HttpOnly: true, Secure: u.secure(r), SameSite: http.SameSiteStrictMode,
	})
}

// clearCookie removes the session cookie.
func (u *UI) clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: u.cookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: u.secure(r), SameSite: http.SameSiteStrictMode,
	})
}

// secure reports whether r's cookies must be Secure: the UI is served over
// https at PublicURL, or r came over TLS, here or to a listener that
// terminates it in front of the UI (WithHTTPS).
func (u *UI) secure(r *http.Request) bool {
	https, _ := r.Context().Value(httpsKey{}).(bool)
	return u.secureCookie || r.TLS != nil || https
}

type httpsKey struct{}

// WithHTTPS returns ctx marking a request that reached the server over
// https, though not over TLS here (a proxy or listener in front
// terminated it): its cookies are Secure.
func WithHTTPS(ctx context.Context) context.Context { return context.WithValue(ctx, httpsKey{}, true) }

// logout revokes this browser's own device (Unpair: any scope may) and
// clears the cookie.
func (u *UI) logout(w http.ResponseWriter, r *http.Request, s *session) {
	if s.DeviceID != "" {
		if _, err := u.pairing.Unpair(s.ctx, &contractualv1.UnpairRequest{}); err != nil {
			u.failErr(w, r, s, err)
			return
		}
	}
	u.clearCookie(w, r)
	http.Redirect(w, r, "/ui/pair?done=signed-out", http.StatusSeeOther)
}
