package main

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	// maxTextBytes bounds the digest text: the size of one ntfy message
	// (tools/notify), so the text can be posted as it is.
	maxTextBytes = 4096
	// maxTitleBytes and maxErrorBytes bound one title and one feed error
	// in the text.
	maxTitleBytes = 200
	maxErrorBytes = 200
)

// makeDigest picks the digest's items from the feeds (feeds[i] is nil when
// errs[i] says why) and writes its text. It keeps the newest maxItems items
// of all feeds together (items without a date after those with one, in
// feed order), and only those published since since when since is set
// (dropping undated ones).
func makeDigest(urls []string, feeds []*feed, errs []error, maxItems int, since time.Time, sinceHours *int) output {
	out := output{Items: []item{}, Feeds: make([]feedResult, len(urls))}
	var all []item
	for i, u := range urls {
		r := &out.Feeds[i]
		r.URL = u
		if errs[i] != nil {
			r.Error = errs[i].Error()
			continue
		}
		r.Title = feeds[i].Title
		if r.Title == "" {
			r.Title = label(u)
		}
		for _, it := range feeds[i].Items {
			if !since.IsZero() && (it.at.IsZero() || it.at.Before(since)) {
				continue
			}
			it.Feed, it.feedIndex = r.Title, i
			if it.Title == "" {
				it.Title = "(untitled)"
			}
			if !it.at.IsZero() {
				it.Published = it.at.UTC().Format(time.RFC3339)
			}
			all = append(all, it)
		}
	}
	sort.SliceStable(all, func(a, b int) bool {
		ta, tb := all[a].at, all[b].at
		if ta.IsZero() || tb.IsZero() {
			return !ta.IsZero() && tb.IsZero()
		}
		return ta.After(tb)
	})
	if len(all) > maxItems {
		all = all[:maxItems]
	}
	out.Items = append(out.Items, all...)
	for _, it := range all {
		out.Feeds[it.feedIndex].Items++
	}
	out.Text = text(out, sinceHours)
	return out
}

// label names a feed that has no title by its host and path.
func label(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Host + p.Path
}

// text writes the digest: a summary line, the items feed by feed (in the
// input's order, newest first), then the feeds that could not be read. It
// stays within maxTextBytes, leaving items out (and saying how many) when
// they do not fit.
func text(out output, sinceHours *int) string {
	read := 0
	var failed strings.Builder
	for _, f := range out.Feeds {
		if f.Error != "" {
			fmt.Fprintf(&failed, "Could not read %s: %s\n", truncate(f.URL, maxTitleBytes), truncate(f.Error, maxErrorBytes))
		} else {
			read++
		}
	}
	var b strings.Builder
	switch {
	case len(out.Items) == 0 && sinceHours != nil:
		fmt.Fprintf(&b, "No new items in %s in the last %d hours.\n", plural(read, "feed"), *sinceHours)
	case len(out.Items) == 0:
		fmt.Fprintf(&b, "No items in %s.\n", plural(read, "feed"))
	case sinceHours != nil:
		fmt.Fprintf(&b, "%s from %s in the last %d hours.\n", plural(len(out.Items), "new item"), plural(read, "feed"), *sinceHours)
	default:
		fmt.Fprintf(&b, "The latest %s from %s.\n", plural(len(out.Items), "item"), plural(read, "feed"))
	}
	const moreReserve = 64 // room for the "… and n more not shown" line
	budget := maxTextBytes - b.Len() - failed.Len() - moreReserve
	left := len(out.Items)
	for fi, f := range out.Feeds {
		if f.Items == 0 {
			continue
		}
		header := "\n" + truncate(f.Title, maxTitleBytes) + "\n"
		first := true
		for _, it := range out.Items {
			if it.feedIndex != fi {
				continue
			}
			line := "- " + truncate(it.Title, maxTitleBytes)
			if it.Published != "" {
				line += " (" + it.Published[:len("2006-01-02")] + ")"
			}
			line += "\n"
			if it.Link != "" {
				line += "  " + it.Link + "\n"
			}
			if first {
				line = header + line
			}
			if len(line) > budget {
				continue
			}
			budget -= len(line)
			b.WriteString(line)
			first = false
			left--
		}
	}
	if left > 0 {
		fmt.Fprintf(&b, "\n… and %d more not shown (too long for one message).\n", left)
	}
	if failed.Len() > 0 {
		b.WriteString("\n")
		b.WriteString(failed.String())
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// truncate cuts s to at most n bytes at a rune boundary, marking the cut
// with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
