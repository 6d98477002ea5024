package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/rpc"
)

// relayBase is the base URL the model client builds its requests on when
// they go through the relay tool: only the path is used (the relay's
// contract names where requests go); nothing ever dials it.
const relayBase = "https://relay.contractual.invalid/v1/"

// providerClient returns the HTTP client that carries the model client's
// requests, and the base URL it uses: the relay tool's transport, or a
// loopback-only client for a local keyless provider.
func (s *Service) providerClient() (*http.Client, string, error) {
	m := s.cfg.Model
	switch {
	case m.Model == "":
		if m.Relay != "" || m.BaseURL != "" {
			return nil, "", errs.E(errs.Invalid, "engine: a model name is required with a relay or a base URL")
		}
		return nil, "", nil // no model: sessions are refused, saying how to configure one
	case m.Relay != "" && m.BaseURL != "":
		return nil, "", errs.E(errs.Invalid, "engine: a relay tool or a loopback base URL, not both")
	case m.Relay != "":
		name, export, ok := strings.Cut(m.Relay, ".")
		if !ok || name == "" || export == "" {
			return nil, "", errs.E(errs.Invalid, "engine: relay %q is not <contract name>.<export>", clip(m.Relay, 100))
		}
		return &http.Client{Transport: &relay{s: s}}, relayBase, nil
	case m.BaseURL != "":
		u, err := url.Parse(m.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, "", errs.E(errs.Invalid, "engine: base URL %q is not an http(s) URL", clip(m.BaseURL, 200))
		}
		if !loopbackHost(u.Hostname()) {
			return nil, "", errs.E(errs.Invalid, "engine: base URL %s is not on this machine's loopback: a provider elsewhere is reached through the relay tool "+
				"(its contract names the host, and the host injects the API key), never directly", u.Redacted())
		}
		if u.User != nil {
			return nil, "", errs.E(errs.Invalid, "engine: base URL %s carries credentials; a local provider takes none", u.Redacted())
		}
		if s.cfg.HTTPClient != nil {
			return s.cfg.HTTPClient, m.BaseURL, nil
		}
		return loopbackClient(), m.BaseURL, nil
	}
	return nil, "", errs.E(errs.Invalid, "engine: model %q needs a relay tool (--model-relay llm.chat) or a loopback base URL (--model-url http://127.0.0.1:11434/v1)", clip(m.Model, 100))
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// loopbackClient dials loopback addresses only, whatever a name resolves
// to, and follows no redirect.
func loopbackClient() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, Control: nil}
	return &http.Client{
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
				if err != nil {
					return nil, err
				}
				for _, ip := range ips {
					if ip.IsLoopback() {
						return d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
					}
				}
				return nil, fmt.Errorf("engine: %s is not a loopback address", host)
			},
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     time.Minute,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// relay carries a model request as one call of the relay tool, decided by
// policy for the session's principal and run by the runner: the request
// leaves through the runner's egress path, which injects the provider's
// key for the provider's host only. The engine never sees the key.
type relay struct{ s *Service }

// relayed is the relay tool's output (tools/llm): the provider's answer.
type relayed struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type"`
	Body        string `json:"body"`
}

func (t *relay) RoundTrip(req *http.Request) (*http.Response, error) {
	s := t.s
	ctx := req.Context()
	if req.Body != nil {
		defer req.Body.Close()
	}
	if req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/chat/completions") {
		return nil, errs.E(errs.Internal, "engine: the relay carries chat completions only, not %s %s", req.Method, req.URL.Path)
	}
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
	}
	who := principal.From(ctx)
	ev, err := s.deps.Policy.Evaluate(ctx, &contractualv1.EvaluateRequest{Tool: s.cfg.Model.Relay, Input: body, Principal: who})
	if err != nil {
		return nil, errs.Wrap(errs.KindOf(rpc.FromConnect(err)), rpc.FromConnect(err), "the model relay %s", s.cfg.Model.Relay)
	}
	if d := ev.GetDecision(); d.GetVerdict() != allow {
		return nil, errs.E(errs.FailedPrecondition, "the model relay %s is not allowed for %s: %s (approve its contract, at risk low or medium)",
			s.cfg.Model.Relay, who, d.GetReason())
	}
	run, err := s.deps.Runner.Execute(ctx, &contractualv1.ExecuteRequest{Decision: ev.GetSigned(), Input: ev.GetCanonicalInput()})
	if err != nil {
		err = rpc.FromConnect(err)
		return nil, errs.Wrap(errs.KindOf(err), err, "the model relay %s", s.cfg.Model.Relay)
	}
	var out relayed
	if err := json.Unmarshal(run.GetOutput(), &out); err != nil || out.Status < 100 || out.Status > 599 {
		return nil, errs.E(errs.Unavailable, "the model relay %s gave no HTTP answer (%d bytes of output)", s.cfg.Model.Relay, len(run.GetOutput()))
	}
	ct := out.ContentType
	if ct == "" {
		ct = "application/json"
		if strings.HasPrefix(strings.TrimSpace(out.Body), "data:") {
			ct = "text/event-stream"
		}
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", out.Status, http.StatusText(out.Status)),
		StatusCode:    out.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {ct}},
		Body:          io.NopCloser(bytes.NewReader([]byte(out.Body))),
		ContentLength: int64(len(out.Body)),
		Request:       req,
	}, nil
}
