package model_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/contractual/contractual/internal/engine/model"
	"github.com/contractual/contractual/internal/engine/modeltest"
	"github.com/contractual/contractual/internal/errs"
)

var tools = []model.Tool{
	{Name: "fetch", InputSchema: json.RawMessage(`{"type":"object","additionalProperties":false,"required":["url"],"properties":{"url":{"type":"string","pattern":"^https://"}}}`)},
	// Not strict: an optional property. Its input travels JSON-encoded.
	{Name: "echo", InputSchema: json.RawMessage(`{"type":"object","properties":{"text":{"type":"string","maxLength":10},"n":{"type":"integer"}},"required":["text"]}`)},
}

const (
	validCall   = `{"answer":null,"calls":[{"tool":"fetch","input":{"url":"https://example.com/a"}}]}`
	validAnswer = `{"answer":"It is done.","calls":[]}`
	unknownTool = `{"answer":null,"calls":[{"tool":"shell","input":{"cmd":"rm -rf /"}}]}`
)

func newClient(t testing.TB, srv *modeltest.Server, stream bool, retries int) *model.Client {
	t.Helper()
	c, err := model.New(model.Config{
		BaseURL: srv.URL, Model: "scripted-1", HTTPClient: &http.Client{},
		Stream: stream, Retries: retries,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return c
}

var conv = []model.Message{{Role: model.System, Content: "You are a careful agent."}, {Role: model.User, Content: "Fetch the page."}}

func TestPropose(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "stream"}[stream]
		t.Run(name, func(t *testing.T) {
			cases := []struct {
				name     string
				turns    []modeltest.Turn
				answer   string
				calls    []model.Call
				attempts int
			}{
				{name: "call", turns: []modeltest.Turn{{Content: validCall, PromptTokens: 120, CompletionTokens: 30}},
					calls: []model.Call{{Tool: "fetch", Input: json.RawMessage(`{"url":"https://example.com/a"}`)}}, attempts: 1},
				{name: "answer", turns: []modeltest.Turn{{Content: validAnswer, PromptTokens: 120, CompletionTokens: 30}},
					answer: "It is done.", attempts: 1},
				{name: "encoded input", turns: []modeltest.Turn{{Content: `{"answer":null,"calls":[{"tool":"echo","input":"{\"text\": \"hi\"}"}]}`, PromptTokens: 120, CompletionTokens: 30}},
					calls: []model.Call{{Tool: "echo", Input: json.RawMessage(`{"text":"hi"}`)}}, attempts: 1},
				{name: "unknown tool corrected", turns: []modeltest.Turn{{Content: unknownTool, PromptTokens: 100, CompletionTokens: 10}, {Content: validCall, PromptTokens: 20, CompletionTokens: 20}},
					calls: []model.Call{{Tool: "fetch", Input: json.RawMessage(`{"url":"https://example.com/a"}`)}}, attempts: 2},
				{name: "malformed JSON corrected", turns: []modeltest.Turn{{Content: `{"answer": "unterminated`, PromptTokens: 100, CompletionTokens: 10}, {Content: validAnswer, PromptTokens: 20, CompletionTokens: 20}},
					answer: "It is done.", attempts: 2},
				{name: "answer and calls together corrected", turns: []modeltest.Turn{{Content: `{"answer":"done","calls":[{"tool":"fetch","input":{"url":"https://example.com/a"}}]}`, PromptTokens: 100, CompletionTokens: 10}, {Content: validAnswer, PromptTokens: 20, CompletionTokens: 20}},
					answer: "It is done.", attempts: 2},
				{name: "extra property corrected", turns: []modeltest.Turn{{Content: `{"answer":null,"calls":[{"tool":"fetch","input":{"url":"https://example.com/a","method":"DELETE"}}]}`, PromptTokens: 100, CompletionTokens: 10}, {Content: validCall, PromptTokens: 20, CompletionTokens: 20}},
					calls: []model.Call{{Tool: "fetch", Input: json.RawMessage(`{"url":"https://example.com/a"}`)}}, attempts: 2},
				{name: "input outside its schema corrected", turns: []modeltest.Turn{{Content: `{"answer":null,"calls":[{"tool":"echo","input":"{\"text\": \"far too long a text\"}"}]}`, PromptTokens: 100, CompletionTokens: 10}, {Content: validAnswer, PromptTokens: 20, CompletionTokens: 20}},
					answer: "It is done.", attempts: 2},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					srv := modeltest.New(t, tc.turns...)
					p, err := newClient(t, srv, stream, 0).Propose(ctx(t), conv, tools)
					if err != nil {
						t.Fatalf("Propose: %v", err)
					}
					if p.Answer != tc.answer || p.Attempts != tc.attempts || len(p.Calls) != len(tc.calls) {
						t.Fatalf("got %+v, want answer %q, %d calls, %d attempts", p, tc.answer, len(tc.calls), tc.attempts)
					}
					for i, c := range p.Calls {
						if c.Tool != tc.calls[i].Tool || string(c.Input) != string(tc.calls[i].Input) {
							t.Errorf("call %d = %s %s, want %s %s", i, c.Tool, c.Input, tc.calls[i].Tool, tc.calls[i].Input)
						}
					}
					if p.Usage != (model.Usage{PromptTokens: 120, CompletionTokens: 30}) {
						t.Errorf("usage = %+v, want 120/30 summed over attempts", p.Usage)
					}
					reqs := srv.Requests()
					if len(reqs) != tc.attempts {
						t.Fatalf("%d requests, want %d", len(reqs), tc.attempts)
					}
					for _, r := range reqs {
						if r.Stream != stream {
							t.Errorf("request stream = %v, want %v", r.Stream, stream)
						}
						if r.Model != "scripted-1" {
							t.Errorf("model = %q", r.Model)
						}
					}
					if tc.attempts > 1 {
						// The retry carries the discarded output and a correction.
						last := reqs[len(reqs)-1].Messages
						if n := len(last); n != len(conv)+2 || last[n-2].Role != "assistant" || last[n-2].Content != tc.turns[0].Content ||
							last[n-1].Role != "user" || !strings.Contains(last[n-1].Content, "discarded") {
							t.Errorf("retry messages = %+v", last)
						}
					}
				})
			}
		})
	}
}

func TestRetriesExhausted(t *testing.T) {
	for _, tc := range []struct {
		retries, requests int
	}{{0, 3}, {1, 2}, {-1, 1}} {
		var turns []modeltest.Turn
		for range tc.requests + 1 { // one more than used: the client must stop
			turns = append(turns, modeltest.Turn{Content: unknownTool, PromptTokens: 10, CompletionTokens: 1})
		}
		srv := modeltest.New(t, turns...)
		p, err := newClient(t, srv, false, tc.retries).Propose(ctx(t), conv, tools)
		if !errs.Is(err, errs.FailedPrecondition) || !strings.Contains(err.Error(), "no valid proposal") {
			t.Fatalf("retries %d: err = %v, want failed_precondition", tc.retries, err)
		}
		if got := len(srv.Requests()); got != tc.requests || p.Attempts != tc.requests {
			t.Errorf("retries %d: %d requests, %d attempts, want %d", tc.retries, got, p.Attempts, tc.requests)
		}
		if p.Usage.PromptTokens != int64(10*tc.requests) {
			t.Errorf("usage = %+v, want the spent tokens counted", p.Usage)
		}
	}
}

func TestProviderErrors(t *testing.T) {
	for _, stream := range []bool{false, true} {
		for _, tc := range []struct {
			turn modeltest.Turn
			kind errs.Kind
		}{
			{modeltest.Turn{Status: 500, ErrMessage: "the server had an error"}, errs.Unavailable},
			{modeltest.Turn{Status: 503, ErrMessage: "overloaded"}, errs.Unavailable},
			{modeltest.Turn{Status: 429, ErrMessage: "rate limit reached"}, errs.ResourceExhausted},
			{modeltest.Turn{Status: 401, ErrMessage: "incorrect API key"}, errs.Unauthenticated},
			{modeltest.Turn{Status: 403, ErrMessage: "forbidden"}, errs.PermissionDenied},
			{modeltest.Turn{Status: 400, ErrMessage: "bad schema"}, errs.Invalid},
			{modeltest.Turn{Raw: `{"id": "x", "choices": [`}, errs.Unavailable},
		} {
			srv := modeltest.New(t, tc.turn)
			c, err := model.New(model.Config{BaseURL: srv.URL, Model: "m", HTTPClient: &http.Client{}, APIKey: "sk-test-secret-value", Stream: stream})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Propose(ctx(t), conv, tools)
			if !errs.Is(err, tc.kind) {
				t.Errorf("stream %v, %d %q: err = %v (kind %v), want %v", stream, tc.turn.Status, tc.turn.Raw, err, errs.KindOf(err), tc.kind)
				continue
			}
			if strings.Contains(err.Error(), "sk-test-secret-value") || strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Errorf("error echoes the credential: %v", err)
			}
			if n := len(srv.Requests()); n != 1 {
				t.Errorf("%d requests, want 1: no retries of provider errors", n)
			}
		}
	}
}

func TestDeadline(t *testing.T) {
	for _, stream := range []bool{false, true} {
		release := make(chan struct{})
		srv := modeltest.New(t, modeltest.Turn{Content: validAnswer, Release: release})
		c := newClient(t, srv, stream, 0)
		// The server never answers before release, so the deadline is what
		// ends the call however slow the machine: no race with speed.
		dctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		_, err := c.Propose(dctx, conv, tools)
		cancel()
		close(release)
		if !errs.Is(err, errs.DeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("stream %v: err = %v (kind %v), want deadline_exceeded", stream, err, errs.KindOf(err))
		}
	}
}

func TestRequest(t *testing.T) {
	srv := modeltest.New(t, modeltest.Turn{Content: validAnswer})
	if _, err := newClient(t, srv, false, 0).Propose(ctx(t), conv, tools); err != nil {
		t.Fatal(err)
	}
	r := srv.Requests()[0]
	if h := r.Header.Get("Authorization"); h != "" {
		t.Errorf("Authorization = %q without a key", h)
	}
	var rf struct {
		Type       string `json:"type"`
		JSONSchema struct {
			Name   string         `json:"name"`
			Strict bool           `json:"strict"`
			Schema map[string]any `json:"schema"`
		} `json:"json_schema"`
	}
	if err := json.Unmarshal(r.ResponseFormat, &rf); err != nil {
		t.Fatal(err)
	}
	if rf.Type != "json_schema" || !rf.JSONSchema.Strict {
		t.Fatalf("response_format = %s", r.ResponseFormat)
	}
	s := rf.JSONSchema.Schema
	if s["additionalProperties"] != false {
		t.Errorf("top-level additionalProperties = %v", s["additionalProperties"])
	}
	branches := s["properties"].(map[string]any)["calls"].(map[string]any)["items"].(map[string]any)["anyOf"].([]any)
	var enum []string
	for _, b := range branches {
		props := b.(map[string]any)["properties"].(map[string]any)
		for _, e := range props["tool"].(map[string]any)["enum"].([]any) {
			enum = append(enum, e.(string))
		}
		input := props["input"].(map[string]any)
		if name := props["tool"].(map[string]any)["enum"].([]any)[0]; name == "echo" && input["type"] != "string" {
			t.Errorf("non-strict echo's input = %v, want a JSON-encoded string", input)
		} else if name == "fetch" && input["additionalProperties"] != false {
			t.Errorf("fetch's input = %v, want its strict schema", input)
		}
	}
	if !slices.Equal(enum, []string{"fetch", "echo"}) {
		t.Errorf("tool enum = %v", enum)
	}

	// With a key, the client sends it as a bearer token.
	srv2 := modeltest.New(t, modeltest.Turn{Content: validAnswer})
	c, _ := model.New(model.Config{BaseURL: srv2.URL, Model: "m", HTTPClient: &http.Client{}, APIKey: "sk-x"})
	if _, err := c.Propose(ctx(t), conv, tools); err != nil {
		t.Fatal(err)
	}
	if h := srv2.Requests()[0].Header.Get("Authorization"); h != "Bearer sk-x" {
		t.Errorf("Authorization = %q", h)
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := model.New(model.Config{Model: "m", HTTPClient: &http.Client{}}); !errs.Is(err, errs.Invalid) {
		t.Errorf("no base URL: %v", err)
	}
	if _, err := model.New(model.Config{BaseURL: "http://127.0.0.1/v1", Model: "m"}); !errs.Is(err, errs.Invalid) {
		t.Errorf("no http client: %v", err)
	}
	srv := modeltest.New(t)
	c := newClient(t, srv, false, 0)
	if _, err := c.Propose(ctx(t), conv, []model.Tool{{Name: "x", InputSchema: json.RawMessage(`[1]`)}}); !errs.Is(err, errs.Invalid) {
		t.Errorf("bad tool schema: %v", err)
	}
	if len(srv.Requests()) != 0 {
		t.Error("a request was sent for an invalid tool list")
	}
}
