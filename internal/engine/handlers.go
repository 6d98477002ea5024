package engine

import (
	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/mesh"
)

// Handlers returns the engine's Connect handlers.
func (s *Service) Handlers(opts ...connect.HandlerOption) mesh.Handlers {
	h := mesh.Handlers{}
	h.Add(contractualv1connect.NewSessionServiceHandler(s, opts...))
	h.Add(contractualv1connect.NewEngineInternalServiceHandler(s, opts...)) // agent.go
	return h
}
