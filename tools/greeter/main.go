// Command greeter is a Contractual example tool that reads static contract
// config and logs one line.
//
// Exports:
//
//	greet {"name": "..."} -> {"message": "<greeting>, <name>!"}
//
// The greeting comes from the contract's config key "greeting".
//
// Build: see ../build.sh (GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/extism/go-pdk"
)

func main() {}

type input struct {
	Name *string `json:"name"`
}

func fail(err error) int32 {
	pdk.SetError(err)
	return 1
}

func readName() (string, error) {
	in := pdk.Input()
	if len(bytes.TrimSpace(in)) == 0 {
		return "", errors.New("invalid input: empty, expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	var v input
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("invalid input: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errors.New("invalid input: trailing data after the JSON object")
	}
	if v.Name == nil {
		return "", errors.New(`invalid input: missing required field "name"`)
	}
	return *v.Name, nil
}

//go:wasmexport greet
func greet() int32 {
	name, err := readName()
	if err != nil {
		return fail(err)
	}
	greeting, ok := pdk.GetConfig("greeting")
	if !ok {
		return fail(errors.New(`config key "greeting" is not set`))
	}
	pdk.Log(pdk.LogInfo, fmt.Sprintf("greet: greeting a name of %d characters", utf8.RuneCountInString(name)))
	b, err := json.Marshal(struct {
		Message string `json:"message"`
	}{greeting + ", " + name + "!"})
	if err != nil {
		return fail(fmt.Errorf("encoding output: %v", err))
	}
	pdk.Output(b)
	return 0
}
