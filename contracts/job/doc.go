// Package job reads, checks, compares and describes job definitions: the
// files that say what a job runs, when, on which pinned tools, with which
// bounds on their inputs and within which budgets. The schema is the
// protobuf message contractual.v1.Job (contracts/proto/contractual/v1/job.proto),
// whose doc comments state the rules field by field.
//
// It follows the tool contract format (package contracts/contract) step for
// step, and shares its parser and its error type:
//
//   - [ParseFile] (or [Parse]) reads YAML or JSON strictly, keeping every
//     field's position;
//   - [File.Validate] (or [Validate]) reports every problem at once, each
//     with its field path and, for a file, its line:column;
//   - [Normalize] fills in defaults and puts equivalent spellings into one
//     form; [Canonical] and [Digest] encode and hash it: the digest that
//     the owner's approval (the reusable contract) binds;
//   - [Diff] lists what a new version changes, widening or narrowing;
//   - [NewCard] describes a job in words for the approver.
//
// A step is a tool step (one pinned tool, one input) or an agent step
// (a prompt and the pinned tools the engine's model may propose, with the
// step's input as its data). [Calls] lists every tool a job's steps may
// call with its pin, whichever kind of step names it: what policy allows,
// drift follows and a resume re-pins ([Repin]). [NarrowSchema] says a
// tool's bounds in JSON Schema, for the model.
//
// The cron check here is syntactic only (five fields of cron characters, or
// a macro such as @daily); the scheduler (internal/schedule) owns what an
// expression means. Time zones are checked against the zone database
// embedded in the binary (time/tzdata), so validation does not depend on
// the host.
//
// Errors are errs.Invalid errors wrapping a *[ValidationError].
package job
