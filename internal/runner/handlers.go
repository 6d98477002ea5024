package runner

import (
	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/mesh"
)

// Handlers returns the runner's Connect handler, with opts
// (mesh.HandlerOptions).
func (s *Service) Handlers(opts ...connect.HandlerOption) mesh.Handlers {
	h := mesh.Handlers{}
	h.Add(contractualv1connect.NewRunnerServiceHandler(s, opts...))
	return h
}
