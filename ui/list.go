package ui

import (
	"net/http"
	"net/url"
	"slices"
)

// Page sizes of the lists.
const (
	// listPage is how many rows a list page shows.
	listPage = 50
	// countPage is how many rows the overview counts; past it, it shows
	// "100+".
	countPage = 100
	// maxTrail bounds the previous pages a list's URL remembers.
	maxTrail = 100
)

// listPos is where a paged list is, from its URL: its filters, the token of
// the page shown ("" for the first) and those of the pages before it, for
// "Previous". Tokens are the API's, opaque here.
type listPos struct {
	path    string
	filters url.Values
	token   string
	trail   []string
}

// listPosOf reads a list's position from r; filters names its filter
// parameters, which are kept in the links to other pages.
func listPosOf(r *http.Request, path string, filters ...string) listPos {
	q := r.URL.Query()
	p := listPos{path: path, filters: url.Values{}, token: q.Get("page"), trail: q["prev"]}
	for _, f := range filters {
		if v := q.Get(f); v != "" {
			p.filters.Set(f, v)
		}
	}
	if len(p.trail) > maxTrail {
		p.trail = p.trail[len(p.trail)-maxTrail:]
	}
	return p
}

// filtered reports whether any filter is set.
func (p listPos) filtered() bool { return len(p.filters) > 0 }

// pager are the links to a list's previous and next pages; empty when
// there is none.
type pager struct {
	Prev, Next string
	// First is the link to the first page, when this is not it.
	First string
}

// pager returns the links from p to its neighbours; next is the API's
// token of the next page.
func (p listPos) pager(next string) pager {
	var pg pager
	if next != "" {
		pg.Next = p.href(next, append(slices.Clone(p.trail), p.token))
	}
	if p.token != "" {
		pg.First = p.href("", nil)
		pg.Prev = pg.First
		if n := len(p.trail); n > 0 {
			pg.Prev = p.href(p.trail[n-1], p.trail[:n-1])
		}
	}
	return pg
}

// href is the link to the page token with trail before it.
func (p listPos) href(token string, trail []string) string {
	q := url.Values{}
	for k, v := range p.filters {
		q[k] = v
	}
	if token != "" {
		q.Set("page", token)
		q["prev"] = trail
	}
	if len(q) == 0 {
		return p.path
	}
	return p.path + "?" + q.Encode()
}

// count is how many rows a list holds, up to a page; More if it holds
// more (the "count" template shows "100+").
type count struct {
	N    int
	More bool
}

// allPages calls fetch with each page's token in turn, from the first
// (""), until fetch fails or returns no next token.
func allPages(fetch func(token string) (next string, err error)) error {
	tok := ""
	for {
		next, err := fetch(tok)
		if err != nil || next == "" {
			return err
		}
		tok = next
	}
}
