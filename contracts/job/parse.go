package job

import (
	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// Problem and ValidationError are the contract format's: a job's problems
// read like a contract's.
type (
	Problem         = contract.Problem
	ValidationError = contract.ValidationError
)

// File is a job parsed from a file, with the position of every field.
type File struct {
	// Name is the file name given to ParseFile, used in messages.
	Name string
	// Job is the parsed job, neither validated nor normalized.
	Job *contractualv1.Job

	pos contract.Positions
}

// Parse parses a job from YAML or JSON; see ParseFile.
func Parse(data []byte, filename string) (*contractualv1.Job, error) {
	f, err := ParseFile(data, filename)
	if err != nil {
		return nil, err
	}
	return f.Job, nil
}

// ParseFile parses a job from YAML or JSON under the rules of
// contract.ParseFile: fields by proto or JSON name, enums by short name
// ("policy: catch_up"), and unknown fields, duplicate keys, several
// documents, aliases and nulls refused. It parses only; see Validate.
func ParseFile(data []byte, filename string) (*File, error) {
	j := &contractualv1.Job{}
	pos, err := contract.ParseMessage(data, filename, "job", j)
	if err != nil {
		return nil, err
	}
	return &File{Name: filename, Job: j, pos: pos}, nil
}

// Load parses, validates and normalizes a job: the result is ready for
// Digest, Diff and NewCard.
func Load(data []byte, filename string) (*contractualv1.Job, error) {
	f, err := ParseFile(data, filename)
	if err != nil {
		return nil, err
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	Normalize(f.Job)
	return f.Job, nil
}

// Validate validates f.Job like Validate, and places each problem in the
// file.
func (f *File) Validate() error {
	ps := validate(f.Job)
	for i := range ps {
		pos, _ := f.pos.Find(ps[i].Path)
		ps[i].Line, ps[i].Col = pos.Line, pos.Col
	}
	return contract.Invalid("job", f.Name, ps)
}
