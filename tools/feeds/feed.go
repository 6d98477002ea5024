package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"html"
	"io"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	atomNS = "http://www.w3.org/2005/Atom"
	dcNS   = "http://purl.org/dc/elements/1.1/"
)

// feed is a parsed feed: its title and its items in document order.
type feed struct {
	Title string
	Items []item
}

// item is one entry of the digest. Published is RFC 3339 in UTC, or empty
// when the feed gives no date it can be read from.
type item struct {
	Title     string    `json:"title"`
	Link      string    `json:"link"`
	Published string    `json:"published"`
	Feed      string    `json:"feed"`
	at        time.Time // zero when undated
	feedIndex int
}

// elem is any child element: feeds are read by element name and namespace,
// so that namespaced look-alikes (atom:link in an RSS channel, media:title)
// are told apart from the element the format means.
type elem struct {
	XMLName     xml.Name
	Text        string `xml:",chardata"`
	Inner       string `xml:",innerxml"`
	Href        string `xml:"href,attr"`
	Rel         string `xml:"rel,attr"`
	Type        string `xml:"type,attr"`
	IsPermaLink string `xml:"isPermaLink,attr"`
}

type rssDoc struct {
	Channel struct {
		Items []struct {
			Elems []elem `xml:",any"`
		} `xml:"item"`
		Elems []elem `xml:",any"`
	} `xml:"channel"`
}

type atomDoc struct {
	Entries []struct {
		Elems []elem `xml:",any"`
	} `xml:"entry"`
	Elems []elem `xml:",any"`
}

// find returns the first element named local in namespace space.
func find(es []elem, space, local string) (elem, bool) {
	for _, e := range es {
		if e.XMLName.Space == space && e.XMLName.Local == local {
			return e, true
		}
	}
	return elem{}, false
}

// parseFeed reads an RSS 2.0 or Atom document fetched from base.
func parseFeed(body []byte, base string) (*feed, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errors.New("empty response body")
	}
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Entity = xml.HTMLEntity
	d.CharsetReader = charsetReader
	var root xml.StartElement
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("not a feed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			root = se
			break
		}
	}
	switch {
	case root.Name.Local == "rss" && root.Name.Space == "":
		var doc rssDoc
		if err := d.DecodeElement(&doc, &root); err != nil {
			return nil, fmt.Errorf("not a feed: %v", err)
		}
		return rssFeed(&doc, base), nil
	case root.Name.Local == "feed" && root.Name.Space == atomNS:
		var doc atomDoc
		if err := d.DecodeElement(&doc, &root); err != nil {
			return nil, fmt.Errorf("not a feed: %v", err)
		}
		return atomFeed(&doc, base), nil
	}
	return nil, fmt.Errorf("not an RSS 2.0 or Atom feed: the document is <%s>", root.Name.Local)
}

func rssFeed(doc *rssDoc, base string) *feed {
	f := &feed{}
	if t, ok := find(doc.Channel.Elems, "", "title"); ok {
		f.Title = plain(t.Text, true)
	}
	for _, it := range doc.Channel.Items {
		var i item
		if t, ok := find(it.Elems, "", "title"); ok {
			i.Title = plain(t.Text, true)
		}
		if l, ok := find(it.Elems, "", "link"); ok {
			i.Link = resolve(base, strings.TrimSpace(l.Text))
		}
		if g, ok := find(it.Elems, "", "guid"); ok && i.Link == "" && g.IsPermaLink != "false" {
			i.Link = resolve(base, strings.TrimSpace(g.Text))
		}
		if p, ok := find(it.Elems, "", "pubDate"); ok {
			i.at = parseRSSDate(p.Text)
		} else if p, ok := find(it.Elems, dcNS, "date"); ok {
			i.at, _ = time.Parse(time.RFC3339, strings.TrimSpace(p.Text))
		}
		f.Items = append(f.Items, i)
	}
	return f
}

func atomFeed(doc *atomDoc, base string) *feed {
	f := &feed{}
	if t, ok := find(doc.Elems, atomNS, "title"); ok {
		f.Title = atomText(t)
	}
	for _, e := range doc.Entries {
		var i item
		if t, ok := find(e.Elems, atomNS, "title"); ok {
			i.Title = atomText(t)
		}
		for _, l := range e.Elems {
			if l.XMLName.Space == atomNS && l.XMLName.Local == "link" && (l.Rel == "" || l.Rel == "alternate") {
				i.Link = resolve(base, strings.TrimSpace(l.Href))
				break
			}
		}
		for _, name := range []string{"published", "updated"} {
			if p, ok := find(e.Elems, atomNS, name); ok {
				if t, err := time.Parse(time.RFC3339, strings.TrimSpace(p.Text)); err == nil {
					i.at = t
					break
				}
			}
		}
		f.Items = append(f.Items, i)
	}
	return f
}

// atomText reads an Atom text construct: text, html or xhtml.
func atomText(e elem) string {
	switch e.Type {
	case "html":
		return plain(e.Text, true)
	case "xhtml":
		return plain(html.UnescapeString(stripTags(e.Inner)), false)
	}
	return plain(e.Text, false)
}

var tag = regexp.MustCompile(`<[A-Za-z/!?][^>]*>`)

func stripTags(s string) string { return tag.ReplaceAllString(s, " ") }

// plain makes a title one line of plain text; markup says it may hold
// escaped HTML (Atom type="html", and RSS titles in practice).
func plain(s string, markup bool) string {
	if markup {
		s = html.UnescapeString(stripTags(s))
	}
	return strings.Join(strings.Fields(s), " ")
}

// resolve makes a link absolute against the feed's URL; it drops links
// that are not http or https.
func resolve(base, ref string) string {
	if ref == "" {
		return ""
	}
	b, err := url.Parse(base)
	if err != nil {
		return ""
	}
	u, err := b.Parse(ref)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return ""
	}
	return u.String()
}

// rssLayouts are the RFC 822 date forms feeds use: with or without the
// weekday and the seconds, four- or two-digit years, numeric or named
// zones.
var rssLayouts = func() []string {
	var ls []string
	for _, wd := range []string{"Mon, ", ""} {
		for _, sec := range []string{":05", ""} {
			for _, yr := range []string{"2006", "06"} {
				for _, zone := range []string{"-0700", "MST"} {
					ls = append(ls, wd+"2 Jan "+yr+" 15:04"+sec+" "+zone)
				}
			}
		}
	}
	return append(ls, time.RFC3339)
}()

// rfc822Zones are the zone names RFC 822 defines, with their offsets in
// hours.
var rfc822Zones = map[string]int{
	"UT": 0, "GMT": 0, "Z": 0,
	"EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
}

// parseRSSDate reads an RSS pubDate; the zero time if it cannot.
func parseRSSDate(s string) time.Time {
	s = strings.Join(strings.Fields(s), " ")
	for _, l := range rssLayouts {
		t, err := time.Parse(l, s)
		if err != nil {
			continue
		}
		if name, off := t.Zone(); off == 0 {
			if h, ok := rfc822Zones[name]; ok && h != 0 {
				t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.FixedZone(name, h*3600))
			}
		}
		return t
	}
	return time.Time{}
}

// charsetReader decodes the non-UTF-8 encodings it is cheap to be exact
// about.
func charsetReader(label string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(label) {
	case "us-ascii", "ascii":
		return in, nil
	case "iso-8859-1", "latin1", "iso_8859-1", "l1":
		b, err := io.ReadAll(in)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 0, len(b)+len(b)/4)
		for _, c := range b {
			out = utf8.AppendRune(out, rune(c))
		}
		return bytes.NewReader(out), nil
	}
	return nil, fmt.Errorf("unsupported charset %.40q", label)
}
