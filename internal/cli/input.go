package cli

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"unicode/utf8"

	"github.com/contractual/contractual/internal/errs"
)

// inputFlags are the ways a command takes a call's input: JSON, or text or
// bytes for tools whose contract takes raw input (input_format string or
// bytes). Each may be a literal (--input, --text), @file, or - for stdin.
type inputFlags struct{ json, text, bytes string }

func (f *inputFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.json, "input", "", "the input as JSON: a literal, @file, or - for stdin")
	fs.StringVar(&f.text, "text", "", "the input as text, for tools with input_format string (as extism call --input passes it): a literal, @file, or -")
	fs.StringVar(&f.bytes, "bytes", "", "the input as raw bytes, for tools with input_format bytes: @file or -")
}

// read returns the call's input as the JSON value the API carries: the
// JSON given, or a JSON string of the text or of the bytes in base64.
func (f *inputFlags) read(env *Env) ([]byte, error) {
	set := 0
	for _, v := range []string{f.json, f.text, f.bytes} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return nil, usagef("give the input with exactly one of --input (JSON; '{}' for an empty object), --text or --bytes")
	}
	switch {
	case f.text != "":
		b, err := readArg(env, f.text)
		if err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "reading --text")
		}
		if !utf8.Valid(b) {
			return nil, errs.E(errs.Invalid, "--text is not UTF-8 text: use --bytes for binary input")
		}
		return json.Marshal(string(b))
	case f.bytes != "":
		if f.bytes[0] != '@' && f.bytes != "-" {
			return nil, usagef("--bytes takes @file or - (stdin)")
		}
		b, err := readArg(env, f.bytes)
		if err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "reading --bytes")
		}
		return json.Marshal(base64.StdEncoding.EncodeToString(b))
	}
	b, err := readArg(env, f.json)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "reading --input")
	}
	if !json.Valid(b) {
		return nil, errs.E(errs.Invalid, "--input is not JSON (for a tool that takes text, pass it with --text)")
	}
	return b, nil
}
