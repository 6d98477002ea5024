package engine

import (
	"flag"
	"time"
)

// Env names the environment variables the model flags default from, so
// that a compose file or a shell profile can set them once.
const (
	EnvModel      = "CONTRACTUAL_MODEL"
	EnvModelRelay = "CONTRACTUAL_MODEL_RELAY"
	EnvModelURL   = "CONTRACTUAL_MODEL_URL"
)

// Flags registers the model's flags on fs, defaulting from getenv (nil:
// no environment), and returns the configuration they fill in.
func Flags(fs *flag.FlagSet, getenv func(string) string) *ModelConfig {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	m := &ModelConfig{}
	fs.StringVar(&m.Model, "model", getenv(EnvModel),
		"the chat model's name, e.g. gpt-4.1-mini or llama3.2 ($"+EnvModel+"); without one, chat sessions are refused")
	fs.StringVar(&m.Relay, "model-relay", getenv(EnvModelRelay),
		"the tool that carries the model requests, <contract>.<export> ($"+EnvModelRelay+"): tools/llm's llm.chat, whose approved contract names the provider's URL and injects its API key (the broker secret LLM_API_KEY)")
	fs.StringVar(&m.BaseURL, "model-url", getenv(EnvModelURL),
		"instead of a relay, a keyless provider on this machine's loopback, e.g. http://127.0.0.1:11434/v1 for Ollama ($"+EnvModelURL+")")
	fs.BoolVar(&m.Stream, "model-stream", false, "ask the provider for streamed responses")
	fs.Int64Var(&m.InputPriceMicros, "model-input-price", 0, "the price of a million prompt tokens in millionths of your currency (e.g. 400000 for $0.40), for the sessions' cost budgets")
	fs.Int64Var(&m.OutputPriceMicros, "model-output-price", 0, "the price of a million completion tokens in millionths of your currency")
	fs.DurationVar(&m.Timeout, "model-timeout", 2*time.Minute, "how long one model request may take")
	return m
}
