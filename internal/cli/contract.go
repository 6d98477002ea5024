package cli

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/modcheck"
)

func contractCmd(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("contract", flag.ContinueOnError)
	module := fs.String("module", "", "the module the contract is for: check its digest and imports")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 || pos[0] != "check" {
		return usagef("want a subcommand: check")
	}
	if pos = pos[1:]; len(pos) != 1 {
		return usagef("want one contract file")
	}
	c, err := loadContract(pos[0])
	if err != nil {
		return err
	}
	if *module != "" {
		wasm, err := os.ReadFile(*module)
		if err != nil {
			return errs.Wrap(errs.Invalid, err, "reading module")
		}
		if err := checkModule(c, pos[0], *module, wasm); err != nil {
			return err
		}
	}
	digest, err := contract.Digest(c)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s: ok\ncontract %s\nmodule   %s\n", pos[0], digest, c.GetModule())
	return nil
}

// loadContract reads, validates and normalizes a contract file.
func loadContract(path string) (*contractualv1.Contract, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "reading contract")
	}
	return contract.Load(data, path)
}

// checkModule refuses a module whose bytes are not the ones the contract
// names, or that policy would refuse under the contract's grants
// (modcheck.Check: its size, its imports, code the meter cannot read).
func checkModule(c *contractualv1.Contract, contractPath, modulePath string, wasm []byte) error {
	if d := contract.ModuleDigest(wasm); d != c.GetModule() {
		return errs.E(errs.PermissionDenied, "%s is for module %s, but %s is %s: a changed module needs a new contract",
			contractPath, c.GetModule(), modulePath, d)
	}
	return modcheck.Check(wasm, modcheck.GrantsFor(c))
}
