package gateway

import (
	"testing"

	"github.com/contractual/contractual/internal/policy"
	"github.com/contractual/contractual/runtime/modcheck"
)

// TestPublishCap: the gateway passes on a publish as large as policy takes,
// and no larger: a module at modcheck's limit fits.
func TestPublishCap(t *testing.T) {
	if maxPublishBytes != policy.MaxPublishBytes || maxPublishBytes <= modcheck.MaxModuleBytes {
		t.Fatalf("gateway's publish cap %d, policy's %d, modcheck's module limit %d", maxPublishBytes, policy.MaxPublishBytes, modcheck.MaxModuleBytes)
	}
}
