package ui

import (
	"errors"
	"net/http"

	"github.com/contractual/contractual/internal/errs"
)

// httpStatus maps an error's kind to the status the UI answers with.
func httpStatus(err error) int {
	switch errs.KindOf(err) {
	case errs.Invalid:
		return http.StatusBadRequest
	case errs.Unauthenticated:
		return http.StatusUnauthorized
	case errs.PermissionDenied:
		return http.StatusForbidden
	case errs.NotFound:
		return http.StatusNotFound
	case errs.AlreadyExists, errs.FailedPrecondition:
		return http.StatusConflict
	case errs.ResourceExhausted:
		return http.StatusTooManyRequests
	case errs.Unimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// internalMessage is all a browser learns of an internal error.
const internalMessage = "Internal error: the server could not do this. Nothing is shown here; the details are in the server's log."

// publicError returns the status and message to show for err. The message
// of a closed kind (bad input, not found, conflict...) says what is wrong
// and is shown; anything else is logged and replaced by a generic message.
func (u *UI) publicError(r *http.Request, err error) (int, string) {
	status := httpStatus(err)
	if status == http.StatusInternalServerError {
		u.log.Error("ui: internal error", "method", r.Method, "path", r.URL.Path, "kind", errs.KindOf(err).String(), "err", err)
		return status, internalMessage
	}
	return status, err.Error()
}

// failErr renders the error page for err.
func (u *UI) failErr(w http.ResponseWriter, r *http.Request, s *session, err error) {
	status, msg := u.publicError(r, err)
	u.fail(w, r, s, status, msg)
}

// fail renders the error page with status and msg.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	if isJSONPath(r.URL.Path) {
		writeJSONError(w, status, msg)
		return
	}
	u.render(w, r, status, "error", view{Title: http.StatusText(status), Session: s, Error: msg})
}

// isTooLarge reports whether err is a body over its http.MaxBytesReader
// cap.
func isTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}
