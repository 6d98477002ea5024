// Command llm is Contractual's model-provider relay: it sends an OpenAI
// Chat Completions request body, exactly as it is given, with POST to the
// provider URL the contract's config names, and returns the provider's HTTP
// answer as it is. The engine (the LLM agent) has neither the provider's
// API key nor a network of its own: its model requests are calls of this
// tool, under a contract the owner approves, through the same egress as
// every tool. The API key is injected by the host into the Authorization
// header (the contract's egress rule names the secret LLM_API_KEY); the
// module never sees it.
//
// Exports:
//
//	chat <Chat Completions request body> -> {"status": n, "content_type": "...", "body": "..."}
//
// Build: see ../build.sh (GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/extism/go-pdk"
)

func main() {}

// output is the provider's HTTP answer, whatever its status.
type output struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type"`
	Body        string `json:"body"`
}

// checkInput checks that in is one JSON object with a non-empty string
// "model" and a non-empty array "messages"; the rest is the provider's
// business and is sent unchanged.
func checkInput(in []byte) error {
	if len(bytes.TrimSpace(in)) == 0 {
		return errors.New("invalid input: empty, expected a Chat Completions request (a JSON object)")
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	var v map[string]json.RawMessage
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("invalid input: expected a Chat Completions request (a JSON object): %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid input: trailing data after the JSON object")
	}
	if v == nil {
		return errors.New("invalid input: null, expected a JSON object")
	}
	var model string
	if raw, ok := v["model"]; !ok {
		return errors.New(`invalid input: missing required field "model"`)
	} else if err := json.Unmarshal(raw, &model); err != nil || model == "" {
		return errors.New(`invalid input: "model" must be a non-empty string`)
	}
	var messages []json.RawMessage
	if raw, ok := v["messages"]; !ok {
		return errors.New(`invalid input: missing required field "messages"`)
	} else if err := json.Unmarshal(raw, &messages); err != nil || len(messages) == 0 {
		return errors.New(`invalid input: "messages" must be a non-empty array`)
	}
	return nil
}

// providerURL is the contract's config key url: an https URL of a Chat
// Completions endpoint.
func providerURL() (string, error) {
	url, ok := pdk.GetConfig("url")
	if !ok || url == "" {
		return "", errors.New(`config: no "url" (the provider's https://…/chat/completions endpoint)`)
	}
	rest, isHTTPS := strings.CutPrefix(url, "https://")
	if !isHTTPS || !strings.HasSuffix(url, "/chat/completions") || strings.ContainsAny(url, "?# \t\r\n") ||
		strings.HasPrefix(rest, "/") || strings.Contains(rest[:strings.IndexByte(rest, '/')], "@") {
		return "", fmt.Errorf("config: url %.200q must be https://<host>/…/chat/completions", url)
	}
	return url, nil
}

func fail(err error) int32 {
	pdk.SetError(err)
	return 1
}

//go:wasmexport chat
func chat() int32 {
	in := pdk.Input()
	if err := checkInput(in); err != nil {
		return fail(err)
	}
	url, err := providerURL()
	if err != nil {
		return fail(err)
	}
	req := pdk.NewHTTPRequest(pdk.MethodPost, url)
	req.SetHeader("Content-Type", "application/json")
	req.SetHeader("Accept", "application/json, text/event-stream")
	req.SetHeader("User-Agent", "contractual-llm/1.0")
	req.SetBody(in)
	// A request the host refuses or cannot make ends the call with the
	// host's error; a response, whatever its status, is the output.
	res := req.Send()
	if res.Status() == 0 {
		return fail(fmt.Errorf("no response from POST %s", url))
	}
	body := res.Body()
	if !utf8.Valid(body) {
		return fail(fmt.Errorf("provider answered HTTP status %d with a body that is not UTF-8 (%d bytes)", res.Status(), len(body)))
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(output{Status: int(res.Status()), ContentType: res.Headers()["content-type"], Body: string(body)}); err != nil {
		return fail(fmt.Errorf("encoding output: %v", err))
	}
	pdk.Output(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	return 0
}
