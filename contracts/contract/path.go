package contract

import (
	"regexp"
	"strconv"
)

// Field paths name a place in a contract the way a reader would write it:
// fields by their proto (snake_case) name joined with ".", list elements by
// index ("tools[0].risk"), and map or JSON keys with "." when they look
// like identifiers, else quoted in brackets
// ("capabilities.config[\"api.url\"]").

// identRE matches the map and object keys that need no quoting in a path.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// joinField returns the path of field name inside parent.
func joinField(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// joinIndex returns the path of element i of the list at parent.
func joinIndex(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// joinKey returns the path of the entry with key in the map at parent.
func joinKey(parent, key string) string {
	if identRE.MatchString(key) {
		return joinField(parent, key)
	}
	return parent + "[" + strconv.Quote(key) + "]"
}

// parentPath returns the path one segment up from p, or "" at the top. It
// understands quoted keys, so `config["a.b"]` has parent `config`.
func parentPath(p string) string {
	last := 0 // start of the last segment
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '.':
			last = i
		case '[':
			last = i
			if i+1 < len(p) && p[i+1] == '"' {
				// Skip the quoted key; strconv.QuotedPrefix knows the escapes.
				q, err := strconv.QuotedPrefix(p[i+1:])
				if err != nil {
					return p[:last]
				}
				i += len(q)
			}
		}
	}
	return p[:last]
}

// ancestors calls fn with p and then each of its ancestors, nearest first,
// until fn returns true or the paths run out.
func ancestors(p string, fn func(string) bool) {
	for {
		if fn(p) || p == "" {
			return
		}
		p = parentPath(p)
	}
}
