// Command ghstars is a Contractual example tool that calls one HTTP API under
// a single egress rule: GET https://api.github.com/repos/... (no secrets; it
// uses the unauthenticated GitHub REST API).
//
// Exports:
//
//	repo_stars {"owner": "...", "repo": "..."} -> {"full_name": "...", "stars": n, "forks": n}
//
// Build: see ../build.sh (GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/extism/go-pdk"
)

func main() {}

const apiBase = "https://api.github.com/repos/"

type input struct {
	Owner *string `json:"owner"`
	Repo  *string `json:"repo"`
}

type repoResponse struct {
	FullName *string `json:"full_name"`
	Stars    *int64  `json:"stargazers_count"`
	Forks    *int64  `json:"forks_count"`
}

type output struct {
	FullName string `json:"full_name"`
	Stars    int64  `json:"stars"`
	Forks    int64  `json:"forks"`
}

// validName reports whether s matches ^[A-Za-z0-9_.-]{1,100}$ and is not a
// dot segment ("." or ".."), which would let the URL path escape /repos/.
func validName(s string) bool {
	if len(s) < 1 || len(s) > 100 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

func readInput() (owner, repo string, err error) {
	in := pdk.Input()
	if len(bytes.TrimSpace(in)) == 0 {
		return "", "", errors.New("invalid input: empty, expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	var v input
	if err := dec.Decode(&v); err != nil {
		return "", "", fmt.Errorf("invalid input: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", "", errors.New("invalid input: trailing data after the JSON object")
	}
	if v.Owner == nil {
		return "", "", errors.New(`invalid input: missing required field "owner"`)
	}
	if v.Repo == nil {
		return "", "", errors.New(`invalid input: missing required field "repo"`)
	}
	if !validName(*v.Owner) {
		return "", "", fmt.Errorf("invalid input: owner %q must match ^[A-Za-z0-9_.-]{1,100}$ and not be \".\" or \"..\"", *v.Owner)
	}
	if !validName(*v.Repo) {
		return "", "", fmt.Errorf("invalid input: repo %q must match ^[A-Za-z0-9_.-]{1,100}$ and not be \".\" or \"..\"", *v.Repo)
	}
	return *v.Owner, *v.Repo, nil
}

func fail(err error) int32 {
	pdk.SetError(err)
	return 1
}

//go:wasmexport repo_stars
func repoStars() int32 {
	owner, repo, err := readInput()
	if err != nil {
		return fail(err)
	}
	url := apiBase + owner + "/" + repo
	req := pdk.NewHTTPRequest(pdk.MethodGet, url)
	req.SetHeader("Accept", "application/vnd.github+json")
	req.SetHeader("User-Agent", "contractual-ghstars/1.0")
	req.SetHeader("X-GitHub-Api-Version", "2022-11-28")
	res := req.Send()
	if st := res.Status(); st != 200 {
		return fail(fmt.Errorf("GitHub API returned HTTP status %d for GET %s", st, url))
	}
	var r repoResponse
	if err := json.Unmarshal(res.Body(), &r); err != nil {
		return fail(fmt.Errorf("GitHub API returned an invalid JSON body: %v", err))
	}
	if r.FullName == nil || r.Stars == nil || r.Forks == nil {
		return fail(errors.New("GitHub API response lacks full_name, stargazers_count or forks_count"))
	}
	b, err := json.Marshal(output{FullName: *r.FullName, Stars: *r.Stars, Forks: *r.Forks})
	if err != nil {
		return fail(fmt.Errorf("encoding output: %v", err))
	}
	pdk.Output(b)
	return 0
}
