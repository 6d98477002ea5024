package modeltest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/contractual/contractual/internal/engine/modeltest"
)

// TestRespond: a function plays the model, in both shapes, after the
// script; it sees the whole conversation.
func TestRespond(t *testing.T) {
	m := modeltest.New(t, modeltest.Turn{Content: "scripted"})
	m.Respond(func(r modeltest.Request) modeltest.Turn {
		last := r.Messages[len(r.Messages)-1].Content
		return modeltest.Turn{Content: "echo: " + last + " (" + r.Model + ")"}
	})
	post := func(stream bool, text string) string {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"model": "m", "stream": stream, "messages": []any{map[string]string{"role": "user", "content": text}}})
		resp, err := http.Post(m.URL+"chat/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		if !stream {
			var c struct {
				Choices []struct{ Message struct{ Content string } }
			}
			if err := json.Unmarshal(b, &c); err != nil || len(c.Choices) != 1 {
				t.Fatalf("%v: %s", err, b)
			}
			return c.Choices[0].Message.Content
		}
		var out strings.Builder
		for _, line := range strings.Split(string(b), "\n") {
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok || data == "[DONE]" {
				continue
			}
			var c struct {
				Choices []struct{ Delta struct{ Content string } }
			}
			if err := json.Unmarshal([]byte(data), &c); err != nil {
				t.Fatal(err)
			}
			for _, ch := range c.Choices {
				out.WriteString(ch.Delta.Content)
			}
		}
		return out.String()
	}
	if got := post(false, "a"); got != "scripted" {
		t.Errorf("first: %q", got)
	}
	if got := post(false, "héllo"); got != "echo: héllo (m)" {
		t.Errorf("non-streaming: %q", got)
	}
	if got := post(true, "wörld"); got != "echo: wörld (m)" {
		t.Errorf("streaming: %q", got)
	}
	if n := len(m.Requests()); n != 3 {
		t.Errorf("%d requests recorded", n)
	}
	m.Respond(nil)
	resp, err := http.Post(m.URL+"chat/completions", "application/json", strings.NewReader(`{"model":"m","messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("without a responder: %d", resp.StatusCode)
	}
}
