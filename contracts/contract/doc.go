// Package contract reads, checks and compares contracts: the documents,
// written by a tool's publisher and approved by its owner, that say what a
// WebAssembly tool module may do. The schema is the protobuf message
// contractual.v1.Contract (contracts/proto/contractual/v1/contract.proto),
// whose doc comments state the rules field by field.
//
// A contract goes through these steps:
//
//   - [ParseFile] (or [Parse]) reads YAML or JSON strictly: unknown fields,
//     duplicate keys, aliases and nulls are errors, and every field's
//     position is kept;
//   - [File.Validate] (or [Validate]) checks every rule and reports all the
//     problems at once, each with its field path and, for a file, its
//     line:column;
//   - [Normalize] fills in defaults and puts equivalent spellings into one
//     form;
//   - [Canonical] and [Digest] encode and hash the normal form: the digest
//     that approval binds;
//   - [Diff] lists what a new contract changes against the approved one,
//     each change classified as widening, narrowing or neutral.
//
// [Load] does the first three in one call. At run time, [CheckInput] and
// [CheckOutput] hold a call's input and output to the tool's schemas.
//
// The functions are pure: no I/O beyond the bytes callers pass in. Errors
// are errs.Invalid errors (see internal/errs) wrapping a *[ValidationError]
// that lists every [Problem]:
//
//	c, err := contract.Load(data, "weather.yaml")
//	var verr *contract.ValidationError
//	if errors.As(err, &verr) {
//		for _, p := range verr.Problems {
//			fmt.Printf("%s:%d:%d: %s: %s\n", verr.File, p.Line, p.Col, p.Path, p.Msg)
//		}
//	}
package contract
