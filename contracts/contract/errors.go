package contract

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/contractual/contractual/internal/errs"
)

// Position is a place in a contract file. Line and Col count from 1; zero
// means unknown.
type Position struct {
	Line, Col int
}

// String returns "line:col", or "" when the position is unknown.
func (p Position) String() string {
	switch {
	case p.Line == 0:
		return ""
	case p.Col == 0:
		return fmt.Sprint(p.Line)
	}
	return fmt.Sprintf("%d:%d", p.Line, p.Col)
}

// Problem is one thing wrong with a contract.
type Problem struct {
	// Path is the field path, e.g. "capabilities.http[0].methods[1]"; empty
	// for problems with the file as a whole.
	Path string
	// Line and Col locate the problem in the file, from 1; zero when the
	// contract did not come from a file or the place is unknown.
	Line, Col int
	// Msg says what is wrong, for a human.
	Msg string
}

// String returns "line:col: path: msg", leaving out what is unknown.
func (p Problem) String() string {
	var b strings.Builder
	if pos := (Position{p.Line, p.Col}).String(); pos != "" {
		b.WriteString(pos)
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// ValidationError lists every problem found in a contract. Parse, Validate
// and the other checking functions return it wrapped in an errs.Invalid
// error; reach it with errors.As.
type ValidationError struct {
	// File is the name the contract was parsed from, if any.
	File string
	// Problems holds at least one problem, in file order when positions are
	// known, else in field order.
	Problems []Problem
}

// Error lists the problems, one per line when there are several, each
// prefixed with "file:line:col:" as far as known.
func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return e.line(e.Problems[0])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n\t")
		b.WriteString(e.line(p))
	}
	return b.String()
}

// line formats one problem with the file name in front.
func (e *ValidationError) line(p Problem) string {
	s := p.String()
	if e.File == "" {
		return s
	}
	if p.Line == 0 {
		return e.File + ": " + s
	}
	return e.File + ":" + s
}

// maxProblems bounds the problems reported for one contract.
const maxProblems = 100

// invalid returns problems with a contract; see Invalid.
func invalid(file string, problems []Problem) error {
	return Invalid("contract", file, problems)
}

// Invalid returns problems with a document of the kind what ("contract",
// "job") read from file as an errs.Invalid error wrapping a
// *ValidationError, or nil if there are none. Problems with positions are
// sorted into file order; past maxProblems (100), the rest are left out and a last
// problem says so.
func Invalid(what, file string, problems []Problem) error {
	if len(problems) == 0 {
		return nil
	}
	slices.SortStableFunc(problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	if len(problems) >= maxProblems {
		problems = append(problems[:maxProblems:maxProblems], Problem{
			Msg: fmt.Sprintf("too many problems: only the first %d are listed", maxProblems),
		})
	}
	return errs.Wrap(errs.Invalid, &ValidationError{File: file, Problems: problems}, "invalid %s", what)
}

// problems collects Problems; the zero value is ready to use.
type problems []Problem

// addf records a problem at path.
func (ps *problems) addf(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}
