// Command feeds is a Contractual example tool that reads RSS 2.0 and Atom
// feeds over HTTP GET, under egress rules that name each feed exactly, and
// turns their newest items into a plain-text digest ready to post.
//
// Exports:
//
//	digest {"urls": ["https://..."], "max_items": n, "since_hours": h}
//	    -> {"items": [{"title", "link", "published", "feed"}], "feeds": [{"url", "title", "items", "error"}], "text": "..."}
//
// A feed that answers with an HTTP error or is not a well-formed RSS 2.0 or
// Atom document gets an error in its "feeds" entry and a line in the text;
// the other feeds are still read. A request the host refuses or cannot
// complete (a URL outside the contract, a host that does not answer, a
// response over the contract's size limit) fails the whole call: the host
// aborts the module, as every Extism host does.
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
	"time"

	"github.com/extism/go-pdk"
)

func main() {}

// Input bounds, as in the contract's input schema.
const (
	maxURLs         = 8
	maxURLLength    = 2048
	defaultMaxItems = 20
	maxMaxItems     = 100
	maxSinceHours   = 8760
)

type input struct {
	URLs       []string `json:"urls"`
	MaxItems   *int     `json:"max_items"`
	SinceHours *int     `json:"since_hours"`
}

type output struct {
	Items []item       `json:"items"`
	Feeds []feedResult `json:"feeds"`
	Text  string       `json:"text"`
}

// feedResult is what became of one of the input's feeds.
type feedResult struct {
	URL   string `json:"url"`
	Title string `json:"title"`
	// Items is how many of the feed's items the digest holds.
	Items int    `json:"items"`
	Error string `json:"error,omitempty"`
}

func readInput() (input, error) {
	var v input
	in := pdk.Input()
	if len(bytes.TrimSpace(in)) == 0 {
		return v, errors.New("invalid input: empty, expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, fmt.Errorf("invalid input: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return v, errors.New("invalid input: trailing data after the JSON object")
	}
	if len(v.URLs) == 0 || len(v.URLs) > maxURLs {
		return v, fmt.Errorf("invalid input: urls must hold 1 to %d feed URLs", maxURLs)
	}
	seen := make(map[string]bool, len(v.URLs))
	for _, u := range v.URLs {
		if !strings.HasPrefix(u, "https://") || len(u) > maxURLLength {
			return v, fmt.Errorf("invalid input: feed URL %.100q must start with https:// and be at most %d bytes", u, maxURLLength)
		}
		if seen[u] {
			return v, fmt.Errorf("invalid input: feed URL %.100q is listed twice", u)
		}
		seen[u] = true
	}
	if v.MaxItems == nil {
		n := defaultMaxItems
		v.MaxItems = &n
	}
	if *v.MaxItems < 1 || *v.MaxItems > maxMaxItems {
		return v, fmt.Errorf("invalid input: max_items must be 1 to %d", maxMaxItems)
	}
	if v.SinceHours != nil && (*v.SinceHours < 1 || *v.SinceHours > maxSinceHours) {
		return v, fmt.Errorf("invalid input: since_hours must be 1 to %d", maxSinceHours)
	}
	return v, nil
}

func fail(err error) int32 {
	pdk.SetError(err)
	return 1
}

// fetch GETs one feed and parses it.
func fetch(url string) (*feed, error) {
	req := pdk.NewHTTPRequest(pdk.MethodGet, url)
	req.SetHeader("Accept", "application/atom+xml, application/rss+xml, application/xml;q=0.9, text/xml;q=0.8")
	req.SetHeader("User-Agent", "contractual-feeds/1.0")
	res := req.Send()
	if st := res.Status(); st < 200 || st > 299 {
		return nil, fmt.Errorf("HTTP status %d", st)
	}
	return parseFeed(res.Body(), url)
}

//go:wasmexport digest
func digest() int32 {
	in, err := readInput()
	if err != nil {
		return fail(err)
	}
	var since time.Time
	if in.SinceHours != nil {
		since = time.Now().Add(-time.Duration(*in.SinceHours) * time.Hour)
	}
	feeds := make([]*feed, len(in.URLs))
	errs := make([]error, len(in.URLs))
	for i, u := range in.URLs {
		feeds[i], errs[i] = fetch(u)
	}
	out := makeDigest(in.URLs, feeds, errs, *in.MaxItems, since, in.SinceHours)
	b, err := json.Marshal(out)
	if err != nil {
		return fail(fmt.Errorf("encoding output: %v", err))
	}
	pdk.Output(b)
	return 0
}
