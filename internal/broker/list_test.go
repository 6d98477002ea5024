package broker

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/paging"
)

// walkSecrets follows ListSecrets' page tokens from req, calling between
// after every page but the last, and returns the names listed.
func walkSecrets(t *testing.T, e *env, req *contractualv1.ListSecretsRequest, between func(page int)) []string {
	t.Helper()
	var names []string
	for page := 0; ; page++ {
		resp, err := e.svc.ListSecrets(ownerCtx(), req)
		if err != nil {
			t.Fatalf("ListSecrets(%v): %v", req, err)
		}
		if len(resp.GetSecrets()) > int(req.GetPageSize()) {
			t.Fatalf("a page of %d secrets for page_size %d", len(resp.GetSecrets()), req.GetPageSize())
		}
		for _, m := range resp.GetSecrets() {
			names = append(names, m.GetName())
		}
		if resp.GetNextPageToken() == "" {
			return names
		}
		if between != nil {
			between(page)
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// TestListSecretsPages: following the tokens visits every secret exactly
// once, by name, while secrets are stored between pages: a new version of
// a listed one is not listed again, a new name after the page's last is
// listed, one before it is not (the next walk lists it).
func TestListSecretsPages(t *testing.T) {
	e := newEnv(t)
	var want []string
	for i := range 10 {
		name := fmt.Sprintf("KEY_%02d", 2*i+1) // KEY_01, KEY_03, ... KEY_19
		e.put(name, "v")
		want = append(want, name)
	}
	got := walkSecrets(t, e, &contractualv1.ListSecretsRequest{PageSize: 3}, func(page int) {
		e.put("KEY_01", "rotated")               // listed already: not again
		e.put(fmt.Sprintf("KEY_%02d", 0), "new") // before the cursor: not in this walk
		if page == 0 {
			e.put("KEY_20", "new") // after it: listed
		}
	})
	if want := append(want, "KEY_20"); !slices.Equal(got, want) {
		t.Fatalf("the pages listed %v, want %v", got, want)
	}
	if again := walkSecrets(t, e, &contractualv1.ListSecretsRequest{PageSize: 500}, nil); len(again) != 12 || again[0] != "KEY_00" {
		t.Fatalf("a new walk: %v", again)
	}
	resp, err := e.svc.ListSecrets(ownerCtx(), &contractualv1.ListSecretsRequest{})
	if err != nil || len(resp.GetSecrets()) != 12 || resp.GetNextPageToken() != "" {
		t.Fatalf("no page size: %v %v", resp, err)
	}
	_, err = e.svc.ListSecrets(ownerCtx(), &contractualv1.ListSecretsRequest{PageSize: -1})
	wantKind(t, err, errs.Invalid)
}

// TestListSecretsPrefix: name_prefix keeps the names that start with it,
// paged; a prefix no name can start with, a garbage token, another list's
// and another prefix's are refused.
func TestListSecretsPrefix(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"GITHUB", "GITHUB_TOKEN", "GITLAB_TOKEN", "GIT", "GO", "SLACK"} {
		e.put(n, "v")
	}
	for prefix, want := range map[string][]string{
		"GIT":     {"GIT", "GITHUB", "GITHUB_TOKEN", "GITLAB_TOKEN"},
		"GITHUB_": {"GITHUB_TOKEN"},
		"G":       {"GIT", "GITHUB", "GITHUB_TOKEN", "GITLAB_TOKEN", "GO"},
		"X":       nil,
		"":        {"GIT", "GITHUB", "GITHUB_TOKEN", "GITLAB_TOKEN", "GO", "SLACK"},
	} {
		if got := walkSecrets(t, e, &contractualv1.ListSecretsRequest{PageSize: 1, NamePrefix: prefix}, nil); !slices.Equal(got, want) {
			t.Errorf("prefix %q: %v, want %v", prefix, got, want)
		}
	}
	resp, err := e.svc.ListSecrets(ownerCtx(), &contractualv1.ListSecretsRequest{PageSize: 1, NamePrefix: "GIT"})
	if err != nil || resp.GetNextPageToken() == "" {
		t.Fatalf("first page: %v %v", resp, err)
	}
	for name, req := range map[string]*contractualv1.ListSecretsRequest{
		"lowercase prefix": {NamePrefix: "git"},
		"garbage token":    {PageToken: "Z"},
		"another prefix's": {PageToken: resp.GetNextPageToken(), NamePrefix: "GO"},
		"another list's":   {PageToken: paging.Encode("devices", "", 1)},
	} {
		_, err := e.svc.ListSecrets(ownerCtx(), req)
		if errs.KindOf(err) != errs.Invalid || !strings.Contains(err.Error(), "name_prefix") && !strings.Contains(err.Error(), "page_token") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
