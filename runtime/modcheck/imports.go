package modcheck

import (
	"fmt"
	"strings"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/wasmbin"
)

// The namespaces a module may import from.
const (
	// ExtismEnv holds the Extism kernel and its capability functions
	// (config, log, HTTP).
	ExtismEnv = "extism:host/env"
	// WASIPreview1 is WASI preview 1.
	WASIPreview1 = "wasi_snapshot_preview1"
)

// grant names what a host function needs from the contract.
type grant uint8

const (
	grantAlways grant = iota // the Extism kernel ABI: memory, input, output, config
	grantLog
	grantHTTP
	grantWASI
	grantClock
	grantRandom
)

func (g grant) granted(gr *Grants) bool {
	switch g {
	case grantAlways:
		return true
	case grantLog:
		return gr.Log
	case grantHTTP:
		return len(gr.HTTP) > 0
	case grantWASI:
		return gr.WASI != nil
	case grantClock:
		return gr.WASI != nil && gr.WASI.Clock
	case grantRandom:
		return gr.WASI != nil && gr.WASI.Random
	}
	return false
}

func (g grant) missing() string {
	switch g {
	case grantLog:
		return "the contract does not grant log"
	case grantHTTP:
		return "the contract grants no http egress"
	case grantWASI:
		return "the contract does not grant wasi"
	case grantClock:
		return "the contract does not grant wasi.clock"
	case grantRandom:
		return "the contract does not grant wasi.random"
	}
	return ""
}

// hostFuncs maps every function of ExtismEnv to what it needs. The kernel
// functions only move bytes between the module and its own input, output
// and scratch memory; vars live in the per-call instance and die with it.
// config_get is always available, as in `extism call`: it reads only the
// contract's own static values, so with no config it finds nothing.
var hostFuncs = map[string]grant{
	"alloc": grantAlways, "free": grantAlways, "length": grantAlways, "length_unsafe": grantAlways,
	"load_u8": grantAlways, "load_u64": grantAlways, "store_u8": grantAlways, "store_u64": grantAlways,
	"input_load_u8": grantAlways, "input_load_u64": grantAlways, "input_length": grantAlways,
	"input_offset": grantAlways, "input_set": grantAlways, "output_set": grantAlways,
	"output_length": grantAlways, "output_offset": grantAlways, "reset": grantAlways,
	"error_set": grantAlways, "error_get": grantAlways, "memory_bytes": grantAlways,
	"var_get": grantAlways, "var_set": grantAlways,

	"config_get": grantAlways,
	"log_trace":  grantLog, "log_debug": grantLog, "log_info": grantLog, "log_warn": grantLog,
	"log_error": grantLog, "get_log_level": grantLog,
	"http_request": grantHTTP, "http_status_code": grantHTTP, "http_headers": grantHTTP,
}

// wasiFuncs maps WASI preview 1 functions that need more than grantWASI.
// The sandbox serves every other function of the namespace inertly: there
// is no preopened directory, so every path and fd operation but stdio
// fails; the environment and arguments are empty; stdin is empty.
var wasiFuncs = map[string]grant{
	"clock_time_get": grantClock,
	"clock_res_get":  grantClock,
	"random_get":     grantRandom,
}

// checkImports refuses a module that imports anything its grants do not
// cover, naming every such import.
func checkImports(imports []wasmbin.Import, g *Grants) error {
	var denied []string
	for _, imp := range imports {
		if why := importDenied(imp, g); why != "" {
			denied = append(denied, fmt.Sprintf("%s (%s)", imp, why))
		}
	}
	switch len(denied) {
	case 0:
		return nil
	case 1:
		return errs.E(errs.PermissionDenied, "module imports %s", denied[0])
	}
	return errs.E(errs.PermissionDenied, "module imports %d functions the contract does not grant: %s",
		len(denied), strings.Join(denied, "; "))
}

// importDenied says why imp is not granted, or "" if it is. Every other
// namespace, MeterEnv among them, is refused.
func importDenied(imp wasmbin.Import, g *Grants) string {
	if imp.Kind != wasmbin.KindFunc {
		return fmt.Sprintf("a %s import; only functions can be granted", imp.Kind)
	}
	switch imp.Module {
	case ExtismEnv:
		need, ok := hostFuncs[imp.Name]
		if !ok {
			return "not an Extism host function"
		}
		if !need.granted(g) {
			return need.missing()
		}
		return ""
	case WASIPreview1:
		if !grantWASI.granted(g) {
			return grantWASI.missing()
		}
		if need, ok := wasiFuncs[imp.Name]; ok && !need.granted(g) {
			return need.missing()
		}
		return ""
	}
	return "no contract can grant this namespace"
}
