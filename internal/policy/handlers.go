package policy

import (
	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/mesh"
	"github.com/contractual/contractual/runtime/modcheck"
)

// MaxPublishBytes bounds a Publish request: the module and its contract.
const MaxPublishBytes = modcheck.MaxModuleBytes + 2<<20

// Handlers returns policy's Connect handlers, all four services', with opts
// (mesh.HandlerOptions); Publish may carry a module of up to
// MaxPublishBytes.
func (s *Service) Handlers(opts ...connect.HandlerOption) mesh.Handlers {
	h := mesh.Handlers{}
	h.Add(contractualv1connect.NewPolicyServiceHandler(s, append(opts, connect.WithReadMaxBytes(MaxPublishBytes))...))
	h.Add(contractualv1connect.NewPolicyInternalServiceHandler(s, opts...))
	h.Add(contractualv1connect.NewJobServiceHandler(s, opts...))
	h.Add(contractualv1connect.NewJobInternalServiceHandler(s, opts...))
	return h
}
