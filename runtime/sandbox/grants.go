package sandbox

import (
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/runtime/modcheck"
)

// Grants, WASI and Limits are package modcheck's, which checks a module
// against them without linking wazero (policy does, at publish); see
// modcheck.Grants for what each field grants.
type (
	Grants = modcheck.Grants
	WASI   = modcheck.WASI
	Limits = modcheck.Limits
)

// GrantsFor maps a validated contract to the grants its module runs under
// (modcheck.GrantsFor).
func GrantsFor(c *contractualv1.Contract) Grants { return modcheck.GrantsFor(c) }
