// Package model is the engine's one client for the OpenAI Chat Completions
// API (OpenAI, Ollama, vLLM, llama.cpp's server, LM Studio). It asks the model
// for a proposal, a final answer or a list of tool calls, through strict
// structured outputs only, and validates every response against the same
// schema before anything else sees it: a response that fails is discarded and
// retried with a corrective message a bounded number of times.
//
// The client holds no secret of its own: the caller's *http.Client carries
// its requests (later through the platform's egress path, which injects the
// provider's key at the boundary). An API key may be given for direct use; it
// is never logged.
package model

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/contractual/contractual/internal/errs"
)

// DefaultRetries is how many times an invalid response is retried.
const DefaultRetries = 2

// Config configures a Client.
type Config struct {
	// BaseURL is the API's base, e.g. https://api.openai.com/v1/ or
	// http://localhost:11434/v1/.
	BaseURL string
	// Model is the model's name.
	Model string
	// HTTPClient carries every request; required. Authentication is its
	// business unless APIKey is set.
	HTTPClient *http.Client
	// APIKey, optional, is sent as a bearer token. Leave it empty when the
	// HTTPClient's transport (the egress path) adds the credential.
	APIKey string
	// Retries bounds how many times an invalid response is retried: 0 means
	// DefaultRetries, a negative value none.
	Retries int
	// Stream asks for SSE streaming responses and accumulates their deltas.
	Stream bool
	// Logger, if nil, is slog.Default().
	Logger *slog.Logger
}

// Client proposes through one model.
type Client struct {
	svc     openai.ChatCompletionService
	model   string
	retries int
	stream  bool
	log     *slog.Logger
}

// New returns a client for cfg. It does not read the environment
// (OPENAI_API_KEY and the like are ignored) and does no retries of its own on
// transport errors: the engine decides what to do with a failed turn.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" || cfg.Model == "" {
		return nil, errs.E(errs.Invalid, "model: base URL and model name are required")
	}
	if cfg.HTTPClient == nil {
		return nil, errs.E(errs.Invalid, "model: an http.Client is required")
	}
	base := cfg.BaseURL
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	opts := []option.RequestOption{
		option.WithBaseURL(base),
		option.WithHTTPClient(cfg.HTTPClient),
		option.WithMaxRetries(0),
	}
	if cfg.APIKey != "" {
		opts = append(opts, option.WithAPIKey(cfg.APIKey))
	}
	retries := cfg.Retries
	switch {
	case retries == 0:
		retries = DefaultRetries
	case retries < 0:
		retries = 0
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	// NewChatCompletionService, unlike openai.NewClient, applies only the
	// options given: no environment defaults.
	return &Client{
		svc:     openai.NewChatCompletionService(opts...),
		model:   cfg.Model,
		retries: retries,
		stream:  cfg.Stream,
		log:     log.With("model", cfg.Model),
	}, nil
}

// Role is a message's author.
type Role string

// The roles of a conversation.
const (
	System    Role = "system"
	User      Role = "user"
	Assistant Role = "assistant"
)

// Message is one message of the conversation.
type Message struct {
	Role    Role
	Content string
}

// Usage counts tokens, summed over all attempts of a Propose call.
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
}

// Proposal is a validated response: either Answer or Calls is set.
type Proposal struct {
	Answer string
	Calls  []Call
	Usage  Usage
	// Attempts is how many responses were requested (1 + retries used).
	Attempts int
}

// Propose sends the conversation with a strict response schema built from
// tools and returns the first response that validates. Errors are *errs.Error:
// Invalid for bad tools or messages, FailedPrecondition when every attempt
// was invalid, and the provider's failures as described at providerError.
// On error, the usage spent so far is still returned in the Proposal.
func (c *Client) Propose(ctx context.Context, msgs []Message, tools []Tool) (*Proposal, error) {
	sch, err := buildSchema(tools)
	if err != nil {
		return nil, err
	}
	conv := make([]openai.ChatCompletionMessageParamUnion, 0, len(msgs)+2*c.retries)
	for i, m := range msgs {
		switch m.Role {
		case System:
			conv = append(conv, openai.SystemMessage(m.Content))
		case User:
			conv = append(conv, openai.UserMessage(m.Content))
		case Assistant:
			conv = append(conv, openai.AssistantMessage(m.Content))
		default:
			return nil, errs.E(errs.Invalid, "model: message %d has role %q", i, m.Role)
		}
	}
	format := openai.ChatCompletionNewParamsResponseFormatUnion{
		OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{
				Name:        schemaName,
				Description: openai.String("A final answer to the user, or tool calls to propose."),
				Strict:      openai.Bool(true),
				Schema:      sch.doc,
			},
		},
	}
	p := &Proposal{}
	var last error
	for attempt := 0; attempt <= c.retries; attempt++ {
		p.Attempts = attempt + 1
		params := openai.ChatCompletionNewParams{
			Model:          shared.ChatModel(c.model),
			Messages:       conv,
			ResponseFormat: format,
		}
		content, usage, err := c.complete(ctx, params)
		p.Usage.PromptTokens += usage.PromptTokens
		p.Usage.CompletionTokens += usage.CompletionTokens
		if err != nil {
			return p, err
		}
		answer, calls, err := sch.parse(content)
		if err == nil {
			p.Answer, p.Calls = answer, calls
			c.log.DebugContext(ctx, "model proposal", "attempt", p.Attempts, "calls", len(calls),
				"prompt_tokens", p.Usage.PromptTokens, "completion_tokens", p.Usage.CompletionTokens)
			return p, nil
		}
		last = err
		c.log.InfoContext(ctx, "model response discarded", "attempt", p.Attempts, "reason", err.Error())
		conv = append(conv,
			openai.AssistantMessage(content),
			openai.UserMessage("Your previous response was discarded: "+err.Error()+
				". Reply again with only one JSON object that matches the response schema exactly: "+
				`either {"answer": "<text>", "calls": []} or {"answer": null, "calls": [...]}, `+
				"naming only the listed tools, each input matching its tool's schema."))
	}
	return p, errs.E(errs.FailedPrecondition, "model: no valid proposal after %d attempts: %w", p.Attempts, errInvalid{last})
}

// errInvalid wraps the last validation failure.
type errInvalid struct{ err error }

func (e errInvalid) Error() string { return e.err.Error() }
func (e errInvalid) Unwrap() error { return e.err }

// complete requests one response and returns its content.
func (c *Client) complete(ctx context.Context, params openai.ChatCompletionNewParams) (string, Usage, error) {
	if !c.stream {
		res, err := c.svc.New(ctx, params)
		if err != nil {
			return "", Usage{}, providerError(ctx, err)
		}
		u := Usage{PromptTokens: res.Usage.PromptTokens, CompletionTokens: res.Usage.CompletionTokens}
		if len(res.Choices) == 0 {
			return "", u, errs.E(errs.Unavailable, "model: the provider's response has no choices")
		}
		return res.Choices[0].Message.Content, u, nil
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.svc.NewStreaming(ctx, params)
	defer stream.Close()
	var (
		b      strings.Builder
		u      Usage
		chunks int
	)
	for stream.Next() {
		chunk := stream.Current()
		chunks++
		for _, ch := range chunk.Choices {
			if ch.Index == 0 {
				b.WriteString(ch.Delta.Content)
			}
		}
		if chunk.Usage.PromptTokens != 0 || chunk.Usage.CompletionTokens != 0 {
			u = Usage{PromptTokens: chunk.Usage.PromptTokens, CompletionTokens: chunk.Usage.CompletionTokens}
		}
	}
	if err := stream.Err(); err != nil {
		return "", u, providerError(ctx, err)
	}
	if chunks == 0 {
		return "", u, errs.E(errs.Unavailable, "model: the provider's stream ended without a chunk")
	}
	return b.String(), u, nil
}

// providerError maps a failed request to an errs kind: 401 Unauthenticated,
// 403 PermissionDenied, 429 ResourceExhausted, 408 and 5xx Unavailable, other
// 4xx Invalid (the request was refused); the context's deadline
// DeadlineExceeded; a transport failure or a malformed body Unavailable. The
// message has the status and the provider's error message, never the
// request's headers.
func providerError(ctx context.Context, err error) error {
	var apiErr *openai.Error
	if errors.As(err, &apiErr) {
		msg := apiErr.Message
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		text := fmt.Sprintf("model: the provider answered HTTP %d", apiErr.StatusCode)
		if msg != "" {
			text += ": " + msg
		}
		var k errs.Kind
		switch s := apiErr.StatusCode; {
		case s == http.StatusUnauthorized:
			k = errs.Unauthenticated
		case s == http.StatusForbidden:
			k = errs.PermissionDenied
		case s == http.StatusTooManyRequests:
			k = errs.ResourceExhausted
		case s == http.StatusRequestTimeout || s >= 500:
			k = errs.Unavailable
		default:
			k = errs.Invalid
		}
		return errs.E(k, "%s", text)
	}
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return errs.E(errs.DeadlineExceeded, "model: the provider did not answer in time: %w", context.DeadlineExceeded)
	case errors.Is(err, context.Canceled):
		return errs.E(errs.Unavailable, "model: request canceled: %w", context.Canceled)
	case errors.As(err, &netErr) && netErr.Timeout():
		return errs.E(errs.DeadlineExceeded, "model: the provider did not answer in time")
	}
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	// A body cut short decodes to io.ErrUnexpectedEOF, which the SDK wraps
	// as "error parsing response json": the provider answered, badly.
	if errors.As(err, &syntax) || errors.As(err, &typeErr) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errs.E(errs.Unavailable, "model: the provider's response is malformed: %v", err)
	}
	// Transport errors from net/http name the method and URL; the URL holds
	// no credential (the key travels in a header), so the text is safe.
	return errs.E(errs.Unavailable, "model: the provider could not be reached: %w", err)
}
