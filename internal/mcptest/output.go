package mcptest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// ListedTool is one tool of what the Inspector prints for tools/list.
type ListedTool struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	InputSchema map[string]any `json:"inputSchema"`
}

// Tools parses what the Inspector printed for tools/list, failing t if it
// is not a tools/list result, and returns the tools sorted by name.
func Tools(t testing.TB, out []byte) []ListedTool {
	t.Helper()
	var list struct {
		Tools []ListedTool `json:"tools"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("mcptest: tools/list: %v\n%s", err, out)
	}
	slices.SortFunc(list.Tools, func(a, b ListedTool) int { return strings.Compare(a.Name, b.Name) })
	return list.Tools
}

// ToolNames is the sorted names of Tools(t, out).
func ToolNames(t testing.TB, out []byte) []string {
	t.Helper()
	var names []string
	for _, tool := range Tools(t, out) {
		names = append(names, tool.Name)
	}
	return names
}

// CallResult is what the Inspector prints for tools/call.
type CallResult struct {
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	IsError bool `json:"isError"`
}

// Text is the result's text contents, joined.
func (c CallResult) Text() string {
	var b strings.Builder
	for _, p := range c.Content {
		b.WriteString(p.Text)
	}
	return b.String()
}

// Call parses what the Inspector printed for tools/call, failing t if it
// is not a tools/call result.
func Call(t testing.TB, out []byte) CallResult {
	t.Helper()
	var c CallResult
	if err := json.Unmarshal(out, &c); err != nil {
		t.Fatalf("mcptest: tools/call: %v\n%s", err, out)
	}
	return c
}
