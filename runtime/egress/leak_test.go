package egress_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/egress"
	"github.com/contractual/contractual/runtime/egress/egresstest"
	"github.com/contractual/contractual/runtime/secretscan"
)

// TestLeakGuard: a server echoes the request's Authorization header, so the
// module learns the injected secret. Whatever spelling the module then puts
// the secret in (URL, body, its own header), the request is blocked before
// it leaves, even towards the secret's own audience.
func TestLeakGuard(t *testing.T) {
	const key = "sk-live-1234567890"
	w := newWorld(t, func(rw http.ResponseWriter, r *http.Request) {
		rw.Write([]byte(r.Header.Get("Authorization")))
	})
	rule := egress.Rule{Scheme: "https", Host: "api.example.com", PathPrefix: "/", Methods: []string{"GET", "POST"},
		Secrets: []egress.SecretSpec{{Name: "API_KEY", Header: "Authorization", Format: "Bearer {{secret}}"}}}
	other := egress.Rule{Scheme: "https", Host: "other.example.com", PathPrefix: "/", Methods: []string{"GET", "POST"}}
	spellings := map[string]string{
		"raw":       key,
		"base64":    base64.StdEncoding.EncodeToString([]byte(key)),
		"base64url": base64.RawURLEncoding.EncodeToString([]byte(key)),
		"hex":       hex.EncodeToString([]byte(key)),
		"urlenc":    url.QueryEscape("Bearer " + key),
	}
	for name, spelled := range spellings {
		for _, target := range []string{"api.example.com", "other.example.com"} {
			for _, place := range []string{"url", "body", "header"} {
				cfg := w.cfg
				cfg.Rules = []egress.Rule{rule, other}
				cfg.Secrets = &fakeSecrets{values: map[string]string{"API_KEY": key}}
				s := w.sessionCfg(cfg)
				echo, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/echo"})
				if err != nil || !strings.Contains(string(echo.Body), key) {
					t.Fatalf("echo: %v %v", err, echo)
				}
				before := len(w.requests())
				req := egress.Request{Method: "POST", URL: "https://" + target + "/x"}
				switch place {
				case "url":
					req.URL += "?k=" + url.QueryEscape(spelled)
				case "body":
					req.Body = []byte(`{"k":"` + spelled + `"}`)
				case "header":
					req.Header = http.Header{"X-Data": {spelled}}
				}
				_, err = s.Do(context.Background(), req)
				if errs.KindOf(err) != errs.PermissionDenied || !strings.Contains(err.Error(), "carries a secret") {
					t.Errorf("%s in %s to %s: %v", name, place, target, err)
				}
				if strings.Contains(err.Error(), key) {
					t.Errorf("the error names the secret: %v", err)
				}
				if len(w.requests()) != before {
					t.Errorf("%s in %s to %s: the request left", name, place, target)
				}
			}
		}
	}
}

// TestLeakGuardServerSpellings: a server echoes the injected header back
// in each spelling servers really produce (egresstest.Spellings: JSON with
// \/ or \uXXXX escapes, percent-encoding of every byte, HTML references,
// quoted-printable, wrapped base64...). A module that forwards the echo as
// it got it, in the URL's query or path, the body or a header of its own,
// to the secret's audience or elsewhere, is blocked before the request
// leaves.
func TestLeakGuardServerSpellings(t *testing.T) {
	const key = "sk-live/12+34=567890"
	w := newWorld(t, egresstest.Echo("Authorization"))
	rule := egress.Rule{Scheme: "https", Host: "api.example.com", PathPrefix: "/", Methods: []string{"GET", "POST"},
		Secrets: []egress.SecretSpec{{Name: "API_KEY", Header: "Authorization", Format: "Bearer {{secret}}"}}}
	other := egress.Rule{Scheme: "https", Host: "other.example.com", PathPrefix: "/", Methods: []string{"GET", "POST"}}
	set := secretscan.New([][]byte{[]byte(key)})
	for _, sp := range egresstest.Spellings {
		t.Run(sp.Name, func(t *testing.T) {
			cfg := w.cfg
			cfg.Rules = []egress.Rule{rule, other}
			cfg.Secrets = &fakeSecrets{values: map[string]string{"API_KEY": key}}
			s := w.sessionCfg(cfg)
			echo, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/echo?spelling=" + url.QueryEscape(sp.Name)})
			if err != nil || echo.Status != http.StatusOK || string(echo.Body) != sp.Spell("Bearer "+key) {
				t.Fatalf("echo: %v %v", err, echo)
			}
			if sp.Name != "raw" && strings.Contains(string(echo.Body), key) {
				t.Fatalf("the echo %q holds the key as it is", echo.Body)
			}
			for _, target := range []string{"api.example.com", "other.example.com"} {
				for _, place := range []string{"query", "path", "body", "header"} {
					req := egress.Request{Method: "POST", URL: "https://" + target + "/x"}
					switch place {
					case "query":
						req.URL += "?k=" + url.QueryEscape(string(echo.Body))
					case "path":
						req.URL += "/" + url.PathEscape(string(echo.Body))
					case "body":
						req.Body = echo.Body
					case "header":
						if bytes.ContainsAny(echo.Body, "\r\n") {
							continue // not a header value
						}
						req.Header = http.Header{"X-Data": {string(echo.Body)}}
					}
					before := len(w.requests())
					_, err = s.Do(context.Background(), req)
					switch {
					case place == "path" && errs.KindOf(err) == errs.PermissionDenied && strings.Contains(err.Error(), "path contains an encoded"):
						// Refused before the guard: an encoded '/' in a path.
					case errs.KindOf(err) != errs.PermissionDenied || !strings.Contains(err.Error(), "carries a secret"):
						t.Errorf("in the %s to %s: %v", place, target, err)
					}
					if len(w.requests()) != before {
						t.Errorf("in the %s to %s: the request left", place, target)
					}
					if err != nil && set.Contains([]byte(err.Error())) {
						t.Errorf("in the %s to %s: the error names the secret: %v", place, target, err)
					}
				}
			}
			for _, r := range s.Records() {
				if set.Contains([]byte(r.URL)) || set.Contains([]byte(r.Reason)) {
					t.Errorf("a record names the secret: %+v", r)
				}
			}
		})
	}
}

// TestScrubSpellings: a server redirects to a path that spells the
// injected secret (percent-encoding every byte, or hex); the hop is
// blocked, and neither the records nor the error spell the secret.
func TestScrubSpellings(t *testing.T) {
	const key = "sk-live/12+34=567890"
	var pct strings.Builder
	for _, c := range []byte(key) {
		fmt.Fprintf(&pct, "%%%02X", c)
	}
	for _, spelled := range []string{pct.String(), hex.EncodeToString([]byte(key))} {
		w := newWorld(t, func(rw http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/start" {
				http.Redirect(rw, r, "/cb/"+spelled+"/done", http.StatusFound)
			}
		})
		cfg := w.cfg
		cfg.Rules = []egress.Rule{{Scheme: "https", Host: "api.example.com", PathPrefix: "/",
			Secrets: []egress.SecretSpec{{Name: "API_KEY", Header: "Authorization", Format: "Bearer {{secret}}"}}}}
		cfg.Secrets = &fakeSecrets{values: map[string]string{"API_KEY": key}}
		s := w.sessionCfg(cfg)
		_, err := s.Do(context.Background(), egress.Request{URL: "https://api.example.com/start"})
		if errs.KindOf(err) != errs.PermissionDenied || strings.Contains(err.Error(), spelled) {
			t.Errorf("%s: %v", spelled, err)
		}
		recs := s.Records()
		if len(recs) != 2 || !strings.Contains(recs[1].URL, "/cb/"+secretscan.Redacted+"/done") {
			t.Errorf("%s: records %+v", spelled, recs)
		}
		for _, r := range recs {
			if strings.Contains(r.URL+r.Reason, spelled) {
				t.Errorf("%s: a record spells the secret: %+v", spelled, r)
			}
		}
		if len(w.requests()) != 1 {
			t.Errorf("%s: the redirect was followed", spelled)
		}
	}
}
