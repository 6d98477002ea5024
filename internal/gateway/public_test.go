package gateway

import (
	"slices"
	"testing"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
)

// TestPublicDescriptorsServeNamedServicesOnly: a file that defines a
// service the gateway does not serve (jobs.proto has four) is described
// with the served one only, even when a procedure of another is public.
func TestPublicDescriptorsServeNamedServicesOnly(t *testing.T) {
	public := map[string]bool{
		contractualv1connect.JobServiceGetJobProcedure:    true,
		contractualv1connect.JobRunServiceRunJobProcedure: true,
	}
	files, names, err := publicDescriptors([]string{contractualv1connect.JobServiceName}, public)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{contractualv1connect.JobServiceName}) {
		t.Fatalf("described %v", names)
	}
	if _, err := files.FindDescriptorByName(contractualv1connect.JobRunServiceName); err == nil {
		t.Fatal("JobRunService is described")
	}
}
