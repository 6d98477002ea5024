package runner

import (
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/secretscan"
)

// redacted replaces every secret value found in what a module produced.
const redacted = secretscan.Redacted

// redact returns b with every spelling of every secret replaced by
// redacted. The module never sees a secret value, but a server may echo one
// back in a response the module reads and repeats.
func redact(b []byte, secrets [][]byte) []byte {
	if len(secrets) == 0 || len(b) == 0 {
		return b
	}
	return secretscan.New(secrets).Redact(b)
}

// redactError returns err with its message redacted, keeping its kind.
func redactError(err error, secrets [][]byte) error {
	if len(secrets) == 0 {
		return err
	}
	msg := err.Error()
	clean := string(redact([]byte(msg), secrets))
	if clean == msg {
		return err
	}
	return errs.E(errs.KindOf(err), "%s", clean)
}
