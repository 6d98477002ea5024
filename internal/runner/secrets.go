package runner

import (
	"context"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/principal"
	"github.com/contractual/contractual/internal/rpc"
	"github.com/contractual/contractual/runtime/egress"
)

// Broker issues and redeems single-use handles for secrets; satisfied by the
// broker service and its Connect client.
type Broker interface {
	IssueHandle(context.Context, *contractualv1.IssueHandleRequest) (*contractualv1.IssueHandleResponse, error)
	RedeemHandle(context.Context, *contractualv1.RedeemHandleRequest) (*contractualv1.RedeemHandleResponse, error)
}

// handles is one call's egress.SecretSource: at the moment a request that
// needs a secret is about to be sent, it asks the broker for a handle bound
// to the call's decision, the secret and the request's audience, and
// redeems it at once, as the runner. The value goes only into the header
// the contract names.
type handles struct {
	broker   Broker
	decision *contractualv1.SignedDecision
}

func (h *handles) Secret(ctx context.Context, name string, aud egress.Audience) ([]byte, error) {
	ctx = principal.With(ctx, principal.Runner)
	issued, err := h.broker.IssueHandle(ctx, &contractualv1.IssueHandleRequest{
		Decision: h.decision, Secret: name, Audience: aud.String(),
	})
	if err != nil {
		return nil, rpc.FromConnect(err)
	}
	v, err := h.broker.RedeemHandle(ctx, &contractualv1.RedeemHandleRequest{Handle: issued.GetHandle(), Audience: aud.String()})
	if err != nil {
		return nil, rpc.FromConnect(err)
	}
	return v.GetValue(), nil
}
