// Command probe is the deployment test's own container: a static binary,
// alone in a FROM scratch image, that either calls URLs and reports what
// happened, or serves HTTP(S) for other containers to reach, or stands in
// for a model provider.
//
//	probe dial [--timeout=15s] [--header='Name: value']... URL...
//	probe serve [--addr=:8080] [--cert=FILE --key=FILE] [--token=T]
//	probe model --addr=:443 --cert=FILE --key=FILE --token=T --model=M
//
// dial sends each URL a POST with a JSON body "{}" (what a Connect unary
// call looks like) and the headers given, trusting any server certificate
// and presenting none, and prints one JSON line per URL: {"url", "peer" (for https, the
// identity in the certificate the server showed: its first URI SAN, else
// its common name), "status" (0 if no HTTP response came), "body" (its
// first 256 bytes), "error"}. It always exits 0 when its arguments are
// valid: the test judges the outcome.
//
// serve answers every request with 200 "probe" — except GET /user, which
// stands in for GitHub's API: 200 and a user as JSON if the request carries
// "Authorization: Bearer <token>", else 401. With --cert and --key it
// serves TLS.
//
// model is a scripted OpenAI-compatible Chat Completions server (POST
// /v1/chat/completions, non-streaming), the stand-in for
// api.openai.com that the engine reaches through the relay tool llm.chat.
// It answers only requests that carry "Authorization: Bearer <token>"
// (else 401, in the provider's error shape) for model M (else 400). Its
// script is the engine's strict output: a request whose last message is
// the owner's is answered with a proposal of textkit.slugify of that
// message (whose input, not strict-mode compatible, is a JSON-encoded
// string); one whose last message is a tool's output is answered with the
// slug it read there ("The slug is <slug>."). It logs one line per request: the
// outcome, never the header's value.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: probe dial|serve [flags]")
	}
	switch os.Args[1] {
	case "dial":
		dial(os.Args[2:])
	case "serve":
		serve(os.Args[2:])
	case "model":
		model(os.Args[2:])
	default:
		fail("probe: unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}

// Result is what dial prints for one URL.
type Result struct {
	URL    string `json:"url"`
	Peer   string `json:"peer,omitempty"`
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
	Error  string `json:"error,omitempty"`
}

func dial(args []string) {
	fs := flag.NewFlagSet("probe dial", flag.ExitOnError)
	timeout := fs.Duration("timeout", 15*time.Second, "the bound of each call")
	var headers headerFlag
	fs.Var(&headers, "header", "a request header, `Name: value` (repeatable)")
	fs.Parse(args)
	hc := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: true,
		},
	}
	enc := json.NewEncoder(os.Stdout)
	for _, u := range fs.Args() {
		r := Result{URL: u, Peer: peer(u, *timeout)}
		resp, err := post(hc, u, http.Header(headers))
		if err != nil {
			r.Error = err.Error()
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			resp.Body.Close()
			r.Status, r.Body = resp.StatusCode, string(b)
		}
		enc.Encode(r)
	}
}

// post sends u a POST with the body "{}" and headers h.
func post(hc *http.Client, u string, h http.Header) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader("{}"))
	if err != nil {
		return nil, err
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	return hc.Do(req)
}

// headerFlag collects --header flags.
type headerFlag http.Header

func (h *headerFlag) String() string { return fmt.Sprint(*h) }

func (h *headerFlag) Set(v string) error {
	name, val, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("%q is not Name: value", v)
	}
	if *h == nil {
		*h = headerFlag{}
	}
	http.Header(*h).Add(strings.TrimSpace(name), strings.TrimSpace(val))
	return nil
}

// peer is who the TLS server at an https URL says it is, or "" if the URL
// is not https or no handshake got as far as the server's certificate.
func peer(rawURL string, timeout time.Duration) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" {
		return ""
	}
	var leaf *x509.Certificate
	cfg := &tls.Config{
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) > 0 {
				leaf, _ = x509.ParseCertificate(raw[0])
			}
			return nil
		},
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", u.Host, cfg)
	if err == nil {
		conn.Close()
	}
	switch {
	case leaf == nil:
		return ""
	case len(leaf.URIs) > 0:
		return leaf.URIs[0].String()
	}
	return leaf.Subject.CommonName
}

func serve(args []string) {
	fs := flag.NewFlagSet("probe serve", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "the address to listen on")
	cert := fs.String("cert", "", "the TLS certificate (PEM); with --key, serve TLS")
	key := fs.String("key", "", "the TLS key (PEM)")
	token := fs.String("token", "", "the bearer token GET /user wants")
	fs.Parse(args)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/user" {
			io.WriteString(w, "probe")
			return
		}
		if *token == "" || r.Header.Get("Authorization") != "Bearer "+*token {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"login": "deploytest", "name": "The Deploy Test", "public_repos": 7})
	})
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: time.Minute}
	var err error
	if *cert != "" {
		err = srv.ListenAndServeTLS(*cert, *key)
	} else {
		err = srv.ListenAndServe()
	}
	fail("probe serve: " + err.Error())
}

func model(args []string) {
	fs := flag.NewFlagSet("probe model", flag.ExitOnError)
	addr := fs.String("addr", ":443", "the address to listen on")
	cert := fs.String("cert", "", "the TLS certificate (PEM)")
	key := fs.String("key", "", "the TLS key (PEM)")
	token := fs.String("token", "", "the API key requests must carry as a bearer token")
	name := fs.String("model", "", "the model requests must name")
	fs.Parse(args)
	if *cert == "" || *key == "" || *token == "" || *name == "" {
		fail("probe model: --cert, --key, --token and --model are required")
	}
	mux := http.NewServeMux()
	seq := 0
	var mu sync.Mutex
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seq++
		n := seq
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+*token {
			fmt.Printf("request %d: refused, without the API key\n", n)
			providerError(w, http.StatusUnauthorized, "invalid_api_key", "Incorrect API key provided.")
			return
		}
		var req struct {
			Model    string `json:"model"`
			Stream   bool   `json:"stream"`
			Messages []struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"messages"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil || req.Model != *name || req.Stream || len(req.Messages) == 0 {
			fmt.Printf("request %d: refused, model %q, stream %v, %d messages (%v)\n", n, req.Model, req.Stream, len(req.Messages), err)
			providerError(w, http.StatusBadRequest, "invalid_request_error", "want a non-streaming request for model "+*name)
			return
		}
		last := req.Messages[len(req.Messages)-1].Content
		output := ""
		if strings.Contains(last, "<tool-output") {
			output = last
		}
		var content any
		if output == "" {
			in, _ := json.Marshal(map[string]string{"text": last})
			content = map[string]any{"answer": nil, "calls": []any{map[string]any{"tool": "textkit.slugify", "input": string(in)}}}
		} else {
			slug := "(none)"
			if m := slugRE.FindStringSubmatch(output); m != nil {
				slug = m[1]
			}
			content = map[string]any{"answer": "The slug is " + slug + ".", "calls": []any{}}
		}
		c, _ := json.Marshal(content)
		fmt.Printf("request %d: answered (%d messages, tool output: %v)\n", n, len(req.Messages), output != "")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"id": fmt.Sprintf("chatcmpl-probe-%d", n), "object": "chat.completion", "created": time.Now().Unix(), "model": req.Model,
			"choices": []any{map[string]any{
				"index": 0, "message": map[string]any{"role": "assistant", "content": string(c), "refusal": nil},
				"logprobs": nil, "finish_reason": "stop",
			}},
			"usage": map[string]any{"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
		})
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: time.Minute}
	fail("probe model: " + srv.ListenAndServeTLS(*cert, *key).Error())
}

// slugRE finds textkit.slugify's output in a tool-output message.
var slugRE = regexp.MustCompile(`"slug"\s*:\s*"([^"]*)"`)

// providerError answers in the OpenAI API's error shape.
func providerError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": code, "code": code, "param": nil}})
}
