package worker

import (
	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/mesh"
)

// Handlers returns the worker's Connect handlers, both services', with
// opts (mesh.HandlerOptions).
func (s *Service) Handlers(opts ...connect.HandlerOption) mesh.Handlers {
	h := mesh.Handlers{}
	h.Add(contractualv1connect.NewJobRunServiceHandler(s, opts...))
	h.Add(contractualv1connect.NewWorkerInternalServiceHandler(s, opts...))
	return h
}
