// Command notify is a Contractual example tool with a side effect: it posts
// a message to one ntfy topic (https://ntfy.sh, or a self-hosted ntfy
// server), publishing with POST https://<server>/<topic> and the message as
// the body. The topic's access token is injected by the host into the
// Authorization header (the contract's egress rule names the secret
// NTFY_TOKEN); the module never sees it. The server and topic come from the
// contract's config, so the contract says exactly where messages go.
//
// Exports:
//
//	post {"text": "..."} -> {"id": "...", "time": n, "topic": "..."}
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

const (
	defaultServer = "https://ntfy.sh"
	// maxTextBytes is ntfy's default message size limit; ntfy.sh turns a
	// longer message into an attachment, which this tool does not send.
	maxTextBytes = 4096
)

type input struct {
	Text *string `json:"text"`
}

// published is ntfy's answer to a publish; error responses have "error".
type published struct {
	ID    string `json:"id"`
	Time  int64  `json:"time"`
	Topic string `json:"topic"`
	Error string `json:"error"`
}

type output struct {
	ID    string `json:"id"`
	Time  int64  `json:"time"`
	Topic string `json:"topic"`
}

func readInput() (string, error) {
	in := pdk.Input()
	if len(bytes.TrimSpace(in)) == 0 {
		return "", errors.New("invalid input: empty, expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	var v input
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("invalid input: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errors.New("invalid input: trailing data after the JSON object")
	}
	if v.Text == nil {
		return "", errors.New(`invalid input: missing required field "text"`)
	}
	t := *v.Text
	if strings.TrimSpace(t) == "" {
		return "", errors.New("invalid input: text is empty")
	}
	if len(t) > maxTextBytes || !utf8.ValidString(t) {
		return "", fmt.Errorf("invalid input: text must be UTF-8 of at most %d bytes, it is %d", maxTextBytes, len(t))
	}
	return t, nil
}

// validTopic reports whether s is an ntfy topic name: ^[-_A-Za-z0-9]{1,64}$.
func validTopic(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// topicURL builds the publish URL from the contract's config.
func topicURL() (string, error) {
	server, ok := pdk.GetConfig("server")
	if !ok {
		server = defaultServer
	}
	server = strings.TrimSuffix(server, "/")
	if !strings.HasPrefix(server, "https://") || strings.ContainsAny(server[len("https://"):], "/?#@") {
		return "", fmt.Errorf("config: server %.100q must be https://<host>", server)
	}
	topic, _ := pdk.GetConfig("topic")
	if !validTopic(topic) {
		return "", fmt.Errorf("config: topic %.100q must match ^[-_A-Za-z0-9]{1,64}$", topic)
	}
	return server + "/" + topic, nil
}

func fail(err error) int32 {
	pdk.SetError(err)
	return 1
}

//go:wasmexport post
func post() int32 {
	text, err := readInput()
	if err != nil {
		return fail(err)
	}
	url, err := topicURL()
	if err != nil {
		return fail(err)
	}
	req := pdk.NewHTTPRequest(pdk.MethodPost, url)
	req.SetHeader("Content-Type", "text/plain; charset=utf-8")
	req.SetHeader("User-Agent", "contractual-notify/1.0")
	req.SetBody([]byte(text))
	res := req.Send()
	var p published
	jsonErr := json.Unmarshal(res.Body(), &p)
	if st := res.Status(); st != 200 {
		if jsonErr == nil && p.Error != "" {
			return fail(fmt.Errorf("ntfy returned HTTP status %d for POST %s: %.200s", st, url, p.Error))
		}
		return fail(fmt.Errorf("ntfy returned HTTP status %d for POST %s", st, url))
	}
	if jsonErr != nil {
		return fail(fmt.Errorf("ntfy returned an invalid JSON body: %v", jsonErr))
	}
	if p.ID == "" {
		return fail(errors.New("ntfy response lacks the message id"))
	}
	b, err := json.Marshal(output{ID: p.ID, Time: p.Time, Topic: p.Topic})
	if err != nil {
		return fail(fmt.Errorf("encoding output: %v", err))
	}
	pdk.Output(b)
	return 0
}
