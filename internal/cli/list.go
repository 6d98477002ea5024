package cli

import (
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
)

// listFlags are the paging flags of the subcommands that list: by default
// a list prints one page and, if there is more, how to get the next one.
type listFlags struct {
	all      bool
	pageSize int
	page     string
}

func (l *listFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&l.all, "all", false, "list everything, following the pages (list)")
	fs.IntVar(&l.pageSize, "page-size", 0, "how many to list per page: the server's default (50) if 0, 500 at most (list)")
	fs.StringVar(&l.page, "page", "", "the page to list, from the hint a previous page printed (list)")
}

// each lists page by page: fetch gets the page that token starts (the
// first: "") and returns the next page's token. Without --all it stops
// after one page. It returns the token of the page after the last one
// listed, "" at the end of the list.
func (l *listFlags) each(fetch func(token string) (next string, err error)) (string, error) {
	if l.pageSize < 0 {
		return "", usagef("--page-size %d is negative", l.pageSize)
	}
	tok := l.page
	for {
		next, err := fetch(tok)
		if err != nil || next == "" || !l.all {
			return next, err
		}
		tok = next
	}
}

// table prints a list as a table with header (tab-separated columns):
// fetch writes the rows of the page that token starts to w and returns the
// next page's token, as for each; then the hint for the next page.
func (l *listFlags) table(env *Env, header string, fetch func(w io.Writer, token string) (next string, err error)) error {
	w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	next, err := l.each(func(tok string) (string, error) { return fetch(w, tok) })
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	moreHint(env, next)
	return nil
}

// size is the page size to ask for.
func (l *listFlags) size() int32 { return int32(min(l.pageSize, 1<<20)) }

// moreHint tells, on stderr, how to list the page after the last listed,
// if there is one.
func moreHint(env *Env, next string) {
	if next != "" {
		fmt.Fprintf(env.Stderr, "more: the same command with --page %s lists the next page, --all everything\n", next)
	}
}
