package sandbox

import (
	"github.com/contractual/contractual/runtime/modcheck"
	"github.com/contractual/contractual/runtime/wasmbin"
)

// capabilityEnv is where the capability functions of modcheck.ExtismEnv are
// moved to, so that Contractual, not the go-sdk, implements them (see
// RATIONALE.md, "Sandbox").
const capabilityEnv = "contractual:host/env"

// capabilityFuncs are the modcheck.ExtismEnv functions Contractual implements
// itself; imports of them are renamed to capabilityEnv before compiling.
var capabilityFuncs = map[string]bool{
	"config_get": true,
	"log_trace":  true, "log_debug": true, "log_info": true, "log_warn": true, "log_error": true,
	"get_log_level": true,
	"http_request":  true, "http_status_code": true, "http_headers": true,
}

// routeCapabilities is the wasmbin.Rename function that moves the capability
// imports to capabilityEnv.
func routeCapabilities(imp wasmbin.Import) string {
	if imp.Module == modcheck.ExtismEnv && imp.Kind == wasmbin.KindFunc && capabilityFuncs[imp.Name] {
		return capabilityEnv
	}
	return ""
}
