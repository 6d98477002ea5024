package mcpbridge

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/contractual/contractual/internal/errs"
)

// Headers of the Streamable HTTP transport.
const (
	protocolVersionHeader = "Mcp-Protocol-Version"
	sessionIDHeader       = "Mcp-Session-Id"
	lastEventIDHeader     = "Last-Event-ID"
)

// authTransport adds the device's token to every request to the gateway,
// and the session's protocol version where the SDK's connection does not
// (it learns the version only from its own mcp.Client). It remembers the
// first refusal (401, 403), which ends the bridge.
type authTransport struct {
	base  http.RoundTripper
	token string

	mu      sync.Mutex
	version string
	refused *refusal
}

// refusal is the gateway's 401 or 403.
type refusal struct {
	status int
	body   string // the start of the response's body, one line of text
}

// maxRefusalBody is how much of a refusal's body the bridge quotes.
const maxRefusalBody = 300

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+t.token)
	t.mu.Lock()
	if v := t.version; v != "" && req.Header.Get(protocolVersionHeader) == "" {
		req.Header.Set(protocolVersionHeader, v)
	}
	t.mu.Unlock()
	resp, err := t.base.RoundTrip(req)
	if err != nil || (resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden) {
		return resp, err
	}
	// Quote the start of the body, and give the SDK the whole of it.
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxRefusalBody))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	t.mu.Lock()
	if t.refused == nil {
		t.refused = &refusal{status: resp.StatusCode, body: oneLine(head)}
	}
	t.mu.Unlock()
	return resp, nil
}

func (t *authTransport) setVersion(v string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.version = v
}

// refusal returns the gateway's refusal of this device as an error, or nil.
func (t *authTransport) refusal(endpoint string) error {
	t.mu.Lock()
	r := t.refused
	t.mu.Unlock()
	if r == nil {
		return nil
	}
	if r.status == http.StatusUnauthorized {
		return errs.E(errs.Unauthenticated,
			"the gateway at %s refused this device's token (%s): the device was revoked or its token expired or is wrong; pair again with `contractual pair --scope invoke`",
			endpoint, describe(r.status, r.body))
	}
	return errs.E(errs.PermissionDenied,
		"the gateway at %s refused this device (%s): an agent's device needs the invoke scope (`contractual pair --scope invoke`)",
		endpoint, describe(r.status, r.body))
}

// oneLine is b as one line of printable text.
func oneLine(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return ' '
		}
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, string(b))
	return strings.Join(strings.Fields(s), " ")
}

// The standalone stream's reconnection: after a stream ends, or a request
// fails, the bridge waits and asks again, giving up after maxRetries
// failures in a row.
const (
	maxRetries     = 5
	firstRetry     = time.Second
	maxRetryDelay  = 30 * time.Second
	maxEventLength = 16 << 20 // the SDK's default
)

// listen holds the standalone stream of the session open: the GET on the
// endpoint whose server-sent events are the gateway's messages outside a
// call (tools/list_changed, say), and relays them to the client. A gateway
// without the stream (405, or another 4xx, as the SDK tolerates) is fine;
// a refusal or the session's loss ends the bridge.
func (b *bridge) listen(ctx context.Context, sessionID string) {
	var lastID string
	delay := time.Duration(0)
	for failures := 0; ; {
		if delay > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
		resp, err := b.get(ctx, sessionID, lastID)
		if ctx.Err() != nil {
			if err == nil {
				resp.Body.Close()
			}
			return
		}
		switch {
		case err != nil:
			failures++
			if failures > maxRetries {
				b.stop(errs.Wrap(errs.Unavailable, err, "the gateway at %s: the stream of its messages failed %d times", b.endpoint, failures))
				return
			}
			delay = min(max(2*delay, firstRetry), maxRetryDelay)
			b.log.Warn("contractual mcp: the stream of the gateway's messages", "err", err, "retry_in", delay)
			continue
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			resp.Body.Close()
			b.stop(b.auth.refusal(b.endpoint))
			return
		case resp.StatusCode == http.StatusNotFound && sessionID != "":
			resp.Body.Close()
			b.stop(errs.E(errs.Unavailable, "the gateway at %s ended this MCP session", b.endpoint))
			return
		case resp.StatusCode >= 500:
			resp.Body.Close()
			failures++
			if failures > maxRetries {
				b.stop(errs.E(errs.Unavailable, "the gateway at %s: the stream of its messages failed %d times (%s)", b.endpoint, failures, describe(resp.StatusCode, "")))
				return
			}
			delay = min(max(2*delay, firstRetry), maxRetryDelay)
			continue
		case resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"):
			// 405: the gateway offers no such stream. Calls still work,
			// with what comes on their own streams.
			resp.Body.Close()
			b.log.Info("contractual mcp: the gateway offers no stream of its own messages", "status", resp.StatusCode)
			return
		}
		failures = 0
		var retry time.Duration
		lastID, retry = b.events(ctx, resp.Body, lastID)
		resp.Body.Close()
		if ctx.Err() != nil {
			return
		}
		delay = firstRetry
		if retry > 0 {
			delay = retry
		}
	}
}

// get opens the standalone stream, resuming after lastID if there is one.
func (b *bridge) get(ctx context.Context, sessionID, lastID string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.endpoint, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if sessionID != "" {
		req.Header.Set(sessionIDHeader, sessionID)
	}
	if lastID != "" {
		req.Header.Set(lastEventIDHeader, lastID)
	}
	return b.hc.Do(req)
}

// events relays the messages of one server-sent event stream to the client
// until it ends, and returns the last event's id and the retry delay the
// server asked for.
func (b *bridge) events(ctx context.Context, body io.Reader, lastID string) (string, time.Duration) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventLength)
	var (
		data  bytes.Buffer
		event string
		retry time.Duration
	)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if data.Len() > 0 && (event == "" || event == "message") {
				msg, err := jsonrpc.DecodeMessage(bytes.TrimSuffix(data.Bytes(), []byte("\n")))
				if err != nil {
					b.log.Warn("contractual mcp: a message of the gateway is not JSON-RPC", "err", err)
				} else {
					b.deliver(ctx, msg)
				}
			}
			data.Reset()
			event = ""
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment, a keep-alive
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
		case "event":
			event = value
		case "id":
			lastID = value
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil && ms >= 0 {
				retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		b.log.Warn("contractual mcp: the stream of the gateway's messages broke", "err", err)
	}
	return lastID, retry
}
