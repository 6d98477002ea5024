// Package errs is Contractual's one error type: an error with a closed set of
// kinds, so that every layer can say what went wrong without string matching,
// and the API layer can map each kind to one Connect code in one place.
package errs

import (
	"errors"
	"fmt"
)

// Kind classifies an error. The set is closed: add a kind only together with
// its Connect mapping.
type Kind uint8

const (
	// Internal is a bug or an unexpected failure of the host itself.
	Internal Kind = iota
	// Invalid means the caller's input is malformed or breaks a rule.
	Invalid
	// NotFound means a named object does not exist.
	NotFound
	// AlreadyExists means the object the caller tried to create exists.
	AlreadyExists
	// PermissionDenied means a contract, policy or grant forbids the action.
	PermissionDenied
	// Unauthenticated means the caller did not prove who it is.
	Unauthenticated
	// FailedPrecondition means the system is not in a state that allows it.
	FailedPrecondition
	// ResourceExhausted means a limit was hit (memory, output, requests...).
	ResourceExhausted
	// DeadlineExceeded means a wall-clock limit was hit.
	DeadlineExceeded
	// Unavailable means a dependency could not be reached; retrying may help.
	Unavailable
	// ToolFailed means the tool module ran and reported failure (a trap, an
	// Extism error, a non-zero exit).
	ToolFailed
	// Unimplemented means the procedure or operation does not exist here.
	Unimplemented
)

var kindNames = [...]string{
	Internal:           "internal",
	Invalid:            "invalid",
	NotFound:           "not_found",
	AlreadyExists:      "already_exists",
	PermissionDenied:   "permission_denied",
	Unauthenticated:    "unauthenticated",
	FailedPrecondition: "failed_precondition",
	ResourceExhausted:  "resource_exhausted",
	DeadlineExceeded:   "deadline_exceeded",
	Unavailable:        "unavailable",
	ToolFailed:         "tool_failed",
	Unimplemented:      "unimplemented",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Error is the project's error type.
type Error struct {
	Kind Kind
	// Msg says what is wrong, for a human; it never holds a secret value.
	Msg string
	// Err is the wrapped cause, if any.
	Err error
	// folded is set when Msg already contains Err's text (see E).
	folded bool
}

func (e *Error) Error() string {
	switch {
	case e.Msg == "" && e.Err == nil:
		return e.Kind.String()
	case e.Msg == "":
		return e.Err.Error()
	case e.Err == nil || e.folded:
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// E returns a new error of kind k with a formatted message. A %w verb in
// format wraps its argument as usual.
func E(k Kind, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if u := errors.Unwrap(err); u != nil {
		return &Error{Kind: k, Msg: err.Error(), Err: u, folded: true}
	}
	return &Error{Kind: k, Msg: err.Error()}
}

// Wrap returns err with kind k and a message in front; nil stays nil.
func Wrap(k Kind, err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...), Err: err}
}

// KindOf returns the kind of the first *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Is reports whether err's kind is k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }
