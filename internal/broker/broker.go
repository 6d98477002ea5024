// Package broker is Contractual's BrokerService: it keeps the owner's
// secrets encrypted and releases a value only to the runner, only for one
// call that policy allowed, only for the audience the call's contract
// injects it into, and only once.
//
// Secrets are write-only: the owner puts a value (a new version), lists
// metadata and deletes; no method returns a value except RedeemHandle. A
// value is encrypted with a Tink AEAD keyset (AES-256-GCM) whose
// associated data is "name|version", so a ciphertext moved to another row
// does not decrypt. The keyset itself is stored in broker.db encrypted by
// a key-encryption key (KEK) read from a file at start-up; a missing,
// unreadable, malformed or wrong KEK stops Open (fail closed). RotateKey
// adds a data key, makes it primary, re-encrypts every secret version and
// retires the old keys, in one transaction.
//
// The runner gets a value in two steps. IssueHandle takes a signed
// decision: the broker verifies the signature with policy's public keyset,
// checks the verdict and expiry, fetches the approved contract the
// decision names and checks that one of its HTTP rules, for exactly this
// audience (scheme://host), injects this secret. It returns an opaque,
// single-use handle kept in memory only, bound to the decision, its input
// hash, the secret, the audience and the caller, valid for seconds.
// RedeemHandle, called when the matching request is about to be sent,
// consumes the handle, records the release in the audit log and only then
// returns the value; if the audit log cannot record it, nothing is
// released. Every refused handle is audited as well.
//
// For the scheduler alone, VerifyMac checks a webhook's HMAC-SHA256 under a
// secret's current value and answers valid or not, audited: a webhook key
// never leaves the broker either.
//
// No value is ever formatted into an error, a log line or an audit event.
package broker

import (
	"context"
	"database/sql"
	"sync"
	"time"

	"github.com/tink-crypto/tink-go/v2/tink"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
)

// Policy is what the broker needs from policy: the contract a decision
// names, and the public keyset that verifies decisions. The in-process
// service and the Connect client both satisfy it.
type Policy interface {
	GetContract(context.Context, *contractualv1.GetContractRequest) (*contractualv1.GetContractResponse, error)
	GetVerifier(context.Context, *contractualv1.GetVerifierRequest) (*contractualv1.GetVerifierResponse, error)
}

// Auditor is what the broker needs from the audit service. Append must
// return only once the events are durable.
type Auditor interface {
	Append(context.Context, *contractualv1.AppendRequest) (*contractualv1.AppendResponse, error)
}

var (
	_ contractualv1connect.BrokerServiceHandler         = (*Service)(nil)
	_ contractualv1connect.BrokerInternalServiceHandler = (*Service)(nil)
	_ Policy                                            = struct {
		contractualv1connect.PolicyServiceClient
		contractualv1connect.PolicyInternalServiceClient
	}{}
	_ Auditor = contractualv1connect.AuditInternalServiceClient(nil)
)

// Defaults of Config.
const (
	// DefaultHandleTTL is how long a handle stays redeemable at most.
	DefaultHandleTTL = 10 * time.Second
	// DefaultAuditTimeout bounds one audit append.
	DefaultAuditTimeout = 10 * time.Second
	// DefaultMaxHandles caps the handles outstanding at once.
	DefaultMaxHandles = 10000
)

// Config configures a Service. Dir and KEKFile are required; zero values
// of the others take the production defaults.
type Config struct {
	// Dir holds the broker's store.
	Dir string
	// KEKFile is the key-encryption key (GenerateKEK makes one): in the
	// compose deployment a Docker secret, in the all-in-one server a file
	// beside the data.
	KEKFile string
	// HandleTTL caps a handle's life (default DefaultHandleTTL); a handle
	// also never outlives its decision.
	HandleTTL time.Duration
	// AuditTimeout bounds each audit append (default DefaultAuditTimeout).
	AuditTimeout time.Duration
	// MaxHandles caps the handles outstanding at once (default
	// DefaultMaxHandles).
	MaxHandles int
	// Now returns the current time (default time.Now); tests set it.
	Now func() time.Time
}

// Deps are the services the broker calls; each is required.
type Deps struct {
	// Policy names the contract a decision was made under and verifies
	// decisions.
	Policy Policy
	// Audit records every secret written, handle issued and value
	// released.
	Audit Auditor
}

// withDefaults fills in what o leaves unset.
func (o Config) withDefaults() Config {
	if o.HandleTTL <= 0 {
		o.HandleTTL = DefaultHandleTTL
	}
	if o.AuditTimeout <= 0 {
		o.AuditTimeout = DefaultAuditTimeout
	}
	if o.MaxHandles <= 0 {
		o.MaxHandles = DefaultMaxHandles
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Service implements contractualv1connect.BrokerServiceHandler. It is safe
// for concurrent use.
type Service struct {
	opts    Config
	db      *sql.DB
	policy  Policy
	auditor Auditor
	kek     tink.AEAD

	// mu guards the data keyset and the secrets table: writers (put,
	// delete, rotate) hold it exclusively, readers (redeem) shared, so a
	// reader never decrypts a row with a keyset it was not written under.
	mu   sync.RWMutex
	data *dataKeys

	// verifier is policy's decision verifier, fetched once.
	verifierMu sync.Mutex
	verifier   tink.Verifier

	// handles are the outstanding handles, by sha256 of the handle.
	handlesMu sync.Mutex
	handles   map[string]*handle
}

// Open opens (or creates) the broker's store in cfg.Dir, reads the
// key-encryption key from cfg.KEKFile, and loads (or, on first start,
// creates) the data keyset. It fails closed: a missing, unreadable,
// malformed or wrong key stops it with a message that says which.
func Open(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	switch {
	case deps.Policy == nil:
		return nil, errs.E(errs.Invalid, "broker: no policy service")
	case deps.Audit == nil:
		return nil, errs.E(errs.Invalid, "broker: no audit service")
	case cfg.Dir == "":
		return nil, errs.E(errs.Invalid, "broker: no store directory")
	}
	kekPath := cfg.KEKFile
	kek, err := readKEK(kekPath)
	if err != nil {
		return nil, err
	}
	db, err := openDB(ctx, cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Service{
		opts:    cfg.withDefaults(),
		db:      db,
		policy:  deps.Policy,
		auditor: deps.Audit,
		kek:     kek,
		handles: map[string]*handle{},
	}
	if s.data, err = loadDataKeys(ctx, db, kek, kekPath); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the store. Outstanding handles are lost.
func (s *Service) Close(context.Context) error {
	s.handlesMu.Lock()
	clear(s.handles)
	s.handlesMu.Unlock()
	if err := s.db.Close(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "broker: closing the store")
	}
	return nil
}
