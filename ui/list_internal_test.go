package ui

import (
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestListPos: the links to the next and previous pages carry the filters
// and the trail of the pages before, which is bounded.
func TestListPos(t *testing.T) {
	pos := func(query string) listPos {
		return listPosOf(httptest.NewRequest("GET", "/ui/contracts?"+query, nil), "/ui/contracts", "prefix", "state")
	}
	first := pos("prefix=tk&other=x")
	pg := first.pager("T1")
	if pg.Prev != "" || pg.First != "" || pg.Next != "/ui/contracts?page=T1&prefix=tk&prev=" {
		t.Fatalf("first page: %+v", pg)
	}
	second := pos(strings.TrimPrefix(pg.Next, "/ui/contracts?"))
	pg = second.pager("T2")
	if pg.Prev != "/ui/contracts?prefix=tk" || pg.First != pg.Prev || pg.Next != "/ui/contracts?page=T2&prefix=tk&prev=&prev=T1" {
		t.Fatalf("second page: %+v", pg)
	}
	third := pos(strings.TrimPrefix(pg.Next, "/ui/contracts?"))
	if pg = third.pager(""); pg.Next != "" || pg.Prev != "/ui/contracts?page=T1&prefix=tk&prev=" {
		t.Fatalf("last page: %+v", pg)
	}
	long := url.Values{"page": {"P"}}
	for i := range maxTrail + 10 {
		long.Add("prev", fmt.Sprint(i))
	}
	if p := pos(long.Encode()); len(p.trail) != maxTrail || p.trail[0] != "10" || !strings.Contains(p.pager("").Prev, "page=109") {
		t.Fatalf("a long trail keeps %d: %v", len(p.trail), p.trail[:3])
	}
}
