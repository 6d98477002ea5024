// Command ghwhoami is a Contractual example tool that calls an API needing
// a key it never sees: GET https://api.github.com/user, with the owner's
// token injected by the host into the Authorization header (the contract's
// egress rule names the secret GITHUB_TOKEN). The module sends no
// credentials itself.
//
// Exports:
//
//	whoami {} -> {"login": "...", "name": "...", "public_repos": n}
//
// Build: see ../build.sh (GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared).
package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/extism/go-pdk"
)

func main() {}

const userURL = "https://api.github.com/user"

type user struct {
	Login       *string `json:"login"`
	Name        *string `json:"name"`
	PublicRepos *int64  `json:"public_repos"`
}

type output struct {
	Login       string `json:"login"`
	Name        string `json:"name"`
	PublicRepos int64  `json:"public_repos"`
}

func fail(err error) int32 {
	pdk.SetError(err)
	return 1
}

//go:wasmexport whoami
func whoami() int32 {
	req := pdk.NewHTTPRequest(pdk.MethodGet, userURL)
	req.SetHeader("Accept", "application/vnd.github+json")
	req.SetHeader("User-Agent", "contractual-ghwhoami/1.0")
	req.SetHeader("X-GitHub-Api-Version", "2022-11-28")
	res := req.Send()
	if st := res.Status(); st != 200 {
		return fail(fmt.Errorf("GitHub API returned HTTP status %d for GET %s", st, userURL))
	}
	var u user
	if err := json.Unmarshal(res.Body(), &u); err != nil {
		return fail(fmt.Errorf("GitHub API returned an invalid JSON body: %v", err))
	}
	if u.Login == nil || u.PublicRepos == nil {
		return fail(errors.New("GitHub API response lacks login or public_repos"))
	}
	out := output{Login: *u.Login, PublicRepos: *u.PublicRepos}
	if u.Name != nil {
		out.Name = *u.Name
	}
	b, err := json.Marshal(out)
	if err != nil {
		return fail(fmt.Errorf("encoding output: %v", err))
	}
	pdk.Output(b)
	return 0
}
