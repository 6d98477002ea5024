// Package secret states the rules of a secret apart from the broker that
// keeps secrets: how one is named, as contracts name them, and how large
// its value may be. The broker enforces them; contract validation, the
// Control UI and the CLI check a secret by the same rules without linking
// the broker's store.
package secret

import "regexp"

// MaxValueBytes caps a secret value.
const MaxValueBytes = 64 << 10

// NamePattern is a secret's name: an uppercase letter, then up to 63
// uppercase letters, digits or underscores.
const NamePattern = `^[A-Z][A-Z0-9_]{0,63}$`

var nameRE = regexp.MustCompile(NamePattern)

// ValidName reports whether name matches NamePattern.
func ValidName(name string) bool { return nameRE.MatchString(name) }
