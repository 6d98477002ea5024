// Package modeltest is a scripted OpenAI-compatible Chat Completions server on
// loopback, the named test double of an external model provider. It plays a
// model from a script: each request takes the next turn, which answers with
// given content (a JSON proposal or malformed output), an error status, or a
// raw body, optionally held until the test releases it. It answers in the
// provider's non-streaming shape or, when the request asks for stream: true,
// in its SSE shape (chat.completion.chunk events, then data: [DONE]), and it
// records every request so tests can assert what the model saw.
//
// A test can also play the model with a function (NewFunc, Server.Respond):
// it is given each request, with the whole conversation, and returns the
// turn to answer with. That is how tests play a compromised model, one that
// reads the tool results it is given and obeys the instructions injected in
// them; its turns are written in the same two shapes.
package modeltest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Turn is one scripted answer.
type Turn struct {
	// Content is the assistant message's content (non-streaming) or the
	// concatenation of the deltas (streaming).
	Content string
	// Status, when non-zero and not 200, answers with that HTTP status and an
	// OpenAI-shaped error body carrying ErrMessage.
	Status     int
	ErrMessage string
	// Raw, when set, is written verbatim as a 200 body (a malformed answer).
	Raw string
	// Release, when non-nil, holds the answer until it is closed or the
	// request's context ends.
	Release <-chan struct{}
	// PromptTokens and CompletionTokens are reported as usage.
	PromptTokens, CompletionTokens int
}

// Request is what the server received.
type Request struct {
	Header         http.Header
	Body           json.RawMessage
	Model          string
	Stream         bool
	Messages       []Message
	ResponseFormat json.RawMessage
}

// Message is one message of a recorded request.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Server is the scripted provider. Its URL is the base URL for clients
// (ending in /v1).
type Server struct {
	URL string
	srv *httptest.Server

	mu       sync.Mutex
	turns    []Turn
	respond  func(Request) Turn
	requests []Request
	arrived  chan struct{}
	seq      int
}

// New starts a server on loopback with the given script; it is closed when
// the test ends.
func New(tb testing.TB, turns ...Turn) *Server {
	tb.Helper()
	s := &Server{turns: turns, arrived: make(chan struct{}, 1024)}
	s.srv = httptest.NewServer(s.Handler())
	s.URL = s.srv.URL + "/v1/"
	tb.Cleanup(s.srv.Close)
	return s
}

// Handler serves the provider's API (POST /v1/chat/completions) from the
// same script and records, for a test that puts it behind a server of its
// own: a TLS stand-in of api.openai.com, say.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.serve)
	return mux
}

// NewFunc starts a server on loopback that answers each request with
// respond's turn (after the turns of a script Push adds, if any); it is
// closed when the test ends.
func NewFunc(tb testing.TB, respond func(Request) Turn) *Server {
	tb.Helper()
	s := New(tb)
	s.Respond(respond)
	return s
}

// Respond sets the function that answers the requests the script does not
// (nil: none; such a request gets a 500).
func (s *Server) Respond(respond func(Request) Turn) {
	s.mu.Lock()
	s.respond = respond
	s.mu.Unlock()
}

// Push appends turns to the script.
func (s *Server) Push(turns ...Turn) {
	s.mu.Lock()
	s.turns = append(s.turns, turns...)
	s.mu.Unlock()
}

// Requests returns a copy of the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Arrived receives one value per request, once the request is recorded.
func (s *Server) Arrived() <-chan struct{} { return s.arrived }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var parsed struct {
		Model          string          `json:"model"`
		Stream         bool            `json:"stream"`
		Messages       []Message       `json:"messages"`
		ResponseFormat json.RawMessage `json:"response_format"`
		StreamOptions  struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &parsed); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	req := Request{
		Header: r.Header.Clone(), Body: body, Model: parsed.Model, Stream: parsed.Stream,
		Messages: parsed.Messages, ResponseFormat: parsed.ResponseFormat,
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	var turn Turn
	ok := len(s.turns) > 0
	if ok {
		turn, s.turns = s.turns[0], s.turns[1:]
	}
	respond := s.respond
	s.seq++
	id := fmt.Sprintf("chatcmpl-scripted-%d", s.seq)
	s.mu.Unlock()
	if !ok && respond != nil {
		turn, ok = respond(req), true
	}
	select {
	case s.arrived <- struct{}{}:
	default:
	}
	if !ok {
		writeError(w, http.StatusInternalServerError, "modeltest: script exhausted")
		return
	}
	if turn.Release != nil {
		select {
		case <-turn.Release:
		case <-r.Context().Done():
			return
		}
	}
	switch {
	case turn.Status != 0 && turn.Status != http.StatusOK:
		writeError(w, turn.Status, turn.ErrMessage)
	case turn.Raw != "":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, turn.Raw)
	case parsed.Stream:
		writeStream(w, id, parsed.Model, turn, parsed.StreamOptions.IncludeUsage)
	default:
		writeCompletion(w, id, parsed.Model, turn)
	}
}

func usage(t Turn) map[string]any {
	return map[string]any{
		"prompt_tokens":     t.PromptTokens,
		"completion_tokens": t.CompletionTokens,
		"total_tokens":      t.PromptTokens + t.CompletionTokens,
	}
}

func writeCompletion(w http.ResponseWriter, id, model string, t Turn) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"id":      id,
		"object":  "chat.completion",
		"created": time.Now().Unix(),
		"model":   model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": t.Content, "refusal": nil},
			"logprobs":      nil,
			"finish_reason": "stop",
		}},
		"usage": usage(t),
	})
}

func writeStream(w http.ResponseWriter, id, model string, t Turn, includeUsage bool) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	created := time.Now().Unix()
	flusher, _ := w.(http.Flusher)
	send := func(choices []any, u any) {
		chunk := map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created,
			"model": model, "choices": choices,
		}
		if includeUsage {
			chunk["usage"] = u
		}
		b, _ := json.Marshal(chunk)
		fmt.Fprintf(w, "data: %s\n\n", b)
		if flusher != nil {
			flusher.Flush()
		}
	}
	delta := func(d map[string]any, finish any) []any {
		return []any{map[string]any{"index": 0, "delta": d, "logprobs": nil, "finish_reason": finish}}
	}
	send(delta(map[string]any{"role": "assistant", "content": "", "refusal": nil}, nil), nil)
	// Split the content into a few deltas, as a provider does, at rune
	// boundaries.
	runes := []rune(t.Content)
	step := max(1, len(runes)/3)
	for i := 0; i < len(runes); i += step {
		send(delta(map[string]any{"content": string(runes[i:min(i+step, len(runes))])}, nil), nil)
	}
	send(delta(map[string]any{}, "stop"), nil)
	if includeUsage {
		send([]any{}, usage(t))
	}
	io.WriteString(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	typ := "server_error"
	if status < 500 {
		typ = "invalid_request_error"
	}
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": nil, "code": nil,
	}})
}
