package policy

import (
	"bytes"
	"errors"
	"maps"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
)

// approvedSet is the in-memory view of the approved contracts, the one that
// Evaluate and the runner's per-call GetContract read. It is immutable: a
// change of approval builds a new one (see Service.updateApproved).
type approvedSet struct {
	byName   map[string]*entry
	byDigest map[string]*entry
}

// entry is one approved contract with its tools, ready for Evaluate.
type entry struct {
	// rec is policy's own copy: Evaluate reads it and nothing else does.
	rec   *contractualv1.ContractRecord
	tools map[string]*toolEntry
	// shared is the copy of rec's contract that GetContract hands out (see
	// record).
	shared *contractualv1.Contract
}

// toolEntry is one tool of an approved contract and its input schema,
// compiled on first use: the cache per (contract digest, export).
type toolEntry struct {
	tool *contractualv1.Tool
	once sync.Once
	sch  *jsonschema.Schema // nil if it did not compile: CheckInput reports why
}

// newEntry builds the entry of an approved record.
func newEntry(rec *contractualv1.ContractRecord) *entry {
	e := &entry{
		rec:    rec,
		tools:  make(map[string]*toolEntry, len(rec.GetContract().GetTools())),
		shared: proto.CloneOf(rec.GetContract()),
	}
	for _, t := range rec.GetContract().GetTools() {
		e.tools[t.GetExport()] = &toolEntry{tool: t}
	}
	return e
}

// with returns a copy of a with name's approved entry replaced by e, or
// removed if e is nil.
func (a *approvedSet) with(name string, e *entry) *approvedSet {
	n := &approvedSet{byName: maps.Clone(a.byName), byDigest: maps.Clone(a.byDigest)}
	if n.byName == nil {
		n.byName, n.byDigest = map[string]*entry{}, map[string]*entry{}
	}
	if old := n.byName[name]; old != nil {
		delete(n.byDigest, old.rec.GetDigest())
	}
	delete(n.byName, name)
	if e != nil {
		n.byName[name] = e
		n.byDigest[e.rec.GetDigest()] = e
	}
	return n
}

// record returns e's record for GetContract, which the runner calls on
// every invocation. Cloning the whole contract would cost more than the
// rest of the lookup (~25 µs for textkit), so the record is new but its
// contract is e.shared, a copy made once that all callers share and must
// not modify. Policy itself never reads e.shared, so a caller that did
// modify it could not change a decision; the runner clones and re-hashes
// the contract it keeps.
func (e *entry) record() *contractualv1.ContractRecord {
	r := e.rec
	return &contractualv1.ContractRecord{
		Digest:      r.GetDigest(),
		Contract:    e.shared,
		State:       r.GetState(),
		PublishedBy: r.GetPublishedBy(),
		PublishedAt: proto.CloneOf(r.GetPublishedAt()),
		DecidedBy:   r.GetDecidedBy(),
		DecidedAt:   proto.CloneOf(r.GetDecidedAt()),
		Reason:      r.GetReason(),
	}
}

// schemaURL is where a tool's input schema is registered in the compiler,
// as contract.CheckInput does.
const schemaURL = "contract:///schema.json"

// errNoLoad refuses references to other schema documents.
var errNoLoad = errors.New("a schema must be self-contained")

// noLoader loads no schema document; the drafts' meta-schemas are built in.
type noLoader struct{}

func (noLoader) Load(string) (any, error) { return nil, errNoLoad }

// schema returns the tool's compiled input schema, compiling it on first
// use, or nil if it does not compile.
func (te *toolEntry) schema() *jsonschema.Schema {
	te.once.Do(func() { te.sch = compileInputSchema(te.tool) })
	return te.sch
}

// compileInputSchema compiles t's input schema the way contract.CheckInput
// does: draft 2020-12 unless "$schema" says otherwise, nothing loaded from
// outside the schema. It returns nil if the schema does not compile.
func compileInputSchema(t *contractualv1.Tool) *jsonschema.Schema {
	b, err := protojson.Marshal(t.GetInputSchema())
	if err != nil || t.GetInputSchema() == nil {
		return nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil
	}
	sch, err := c.Compile(schemaURL)
	if err != nil {
		return nil
	}
	return sch
}

// checkInput checks the canonical input of a call against the tool's input
// schema and its input format. The cached compiled schema decides the
// common case, a valid input; anything else goes to contract.CheckInput,
// which is the reference and writes the error message. Should the two ever
// disagree, the call is refused.
func (te *toolEntry) checkInput(canonical []byte) error {
	if sch := te.schema(); sch != nil {
		if v, err := jsonschema.UnmarshalJSON(bytes.NewReader(canonical)); err == nil && sch.Validate(v) == nil {
			_, err := contract.ModuleInput(te.tool, canonical)
			return err
		}
	}
	if err := contract.CheckInput(te.tool, canonical); err != nil {
		return err
	}
	return errs.E(errs.Internal, "policy: the cached input schema of %s refused an input that contract.CheckInput accepts", te.tool.GetExport())
}
