// Package modcheck decides whether a tool module may run under its
// contract, without running it: the module's size, that it imports nothing
// its Grants do not cover, and that the meter can instrument its code. It
// also holds the Grants themselves, mapped from a contract by GrantsFor.
//
// Policy calls Check when a module is published, and `contractual contract
// check` before anything is published; the sandbox loads a module with the
// same checks and the same metering (package sandbox). This package does not
// link wazero, so neither does a service that only checks modules.
package modcheck

import (
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/wasmbin"
)

// MaxModuleBytes caps the size of a module.
const MaxModuleBytes = 64 << 20

// Check refuses what the sandbox would refuse before compiling wasm under
// g: a module over MaxModuleBytes, imports g does not grant (CheckImports),
// and code the meter cannot instrument (an instruction of a feature the
// sandbox does not run). Checked at publish, such a module is refused then
// rather than at its first load.
func Check(wasm []byte, g Grants) error {
	if len(wasm) > MaxModuleBytes {
		return errs.E(errs.Invalid, "module is %d bytes, over the %d byte limit", len(wasm), MaxModuleBytes)
	}
	if err := CheckImports(wasm, g); err != nil {
		return err
	}
	_, err := Meter(wasm, g.Limits.WithDefaults())
	return err
}

// CheckImports refuses a module whose imports ask for anything g does not
// grant; the error names every such import.
func CheckImports(wasm []byte, g Grants) error {
	imports, err := wasmbin.Imports(wasm)
	if err != nil {
		return errs.Wrap(errs.Invalid, err, "reading the module's imports")
	}
	return checkImports(imports, &g)
}
