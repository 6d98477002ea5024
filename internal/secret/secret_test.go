package secret

import (
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, name := range []string{"A", "GITHUB_TOKEN", "K8S", "X_", "A" + strings.Repeat("B", 63)} {
		if !ValidName(name) {
			t.Errorf("ValidName(%q) = false", name)
		}
	}
	for _, name := range []string{"", "_A", "1A", "github_token", "GITHUB-TOKEN", "A B", "Ä", "A\n", "A" + strings.Repeat("B", 64)} {
		if ValidName(name) {
			t.Errorf("ValidName(%q) = true", name)
		}
	}
}
