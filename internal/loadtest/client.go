package loadtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/pairing"
)

// NewHTTPClient is an HTTP/1.1 client that keeps up to conns idle
// connections to one server, so that conns callers at once reuse their
// connections instead of opening one per call (net/http keeps 2 by
// default).
func NewHTTPClient(conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = conns
	t.MaxIdleConnsPerHost = conns
	return &http.Client{Transport: t}
}

// Device is a paired device's view of a server: its token and the Connect
// clients that send it.
type Device struct {
	URL     string
	Token   string
	HTTP    *http.Client
	Tools   contractualv1connect.ToolServiceClient
	Policy  contractualv1connect.PolicyServiceClient
	Pairing contractualv1connect.PairingServiceClient
}

// NewDevice is the device whose token is token, calling the server at url
// through hc.
func NewDevice(hc *http.Client, url, token string) *Device {
	auth := connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}))
	return &Device{
		URL: url, Token: token, HTTP: hc,
		Tools:   contractualv1connect.NewToolServiceClient(hc, url, auth),
		Policy:  contractualv1connect.NewPolicyServiceClient(hc, url, auth),
		Pairing: contractualv1connect.NewPairingServiceClient(hc, url, auth),
	}
}

// PairOwner pairs the server's first device, with scope owner, using the
// setup code the server printed.
func PairOwner(ctx context.Context, hc *http.Client, s *Server, name string) (*Device, error) {
	return pair(ctx, hc, s.URL, &contractualv1.BeginPairingRequest{Name: name}, func(code string) error {
		pc := contractualv1connect.NewPairingServiceClient(hc, s.URL)
		_, err := pc.ApproveWithSetupCode(ctx, &contractualv1.ApproveWithSetupCodeRequest{RequestCode: code, SetupCode: s.SetupCode})
		return err
	})
}

// Pair pairs another device with the given scopes (empty: owner), approved
// by d; the new device gets its own token, so it is a principal of its own.
func (d *Device) Pair(ctx context.Context, hc *http.Client, name string, scopes ...string) (*Device, error) {
	return pair(ctx, hc, d.URL, &contractualv1.BeginPairingRequest{Name: name, Scopes: scopes}, func(code string) error {
		_, err := d.Pairing.ApprovePairing(ctx, &contractualv1.ApprovePairingRequest{Code: code})
		return err
	})
}

// pair runs the pairing protocol for a fresh Ed25519 key: begin, have the
// request approved, prove possession of the key, receive the token.
func pair(ctx context.Context, hc *http.Client, url string, req *contractualv1.BeginPairingRequest, approve func(code string) error) (*Device, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	req.PublicKey = pub
	pc := contractualv1connect.NewPairingServiceClient(hc, url)
	begin, err := pc.BeginPairing(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("pairing %q: %w", req.GetName(), err)
	}
	if err := approve(begin.GetCode()); err != nil {
		return nil, fmt.Errorf("approving %q: %w", req.GetName(), err)
	}
	done, err := pc.CompletePairing(ctx, &contractualv1.CompletePairingRequest{
		DeviceId: begin.GetDeviceId(), Nonce: begin.GetNonce(),
		Signature: ed25519.Sign(priv, pairing.SignedMessage(begin.GetDeviceId(), begin.GetNonce())),
	})
	if err != nil {
		return nil, fmt.Errorf("completing the pairing of %q: %w", req.GetName(), err)
	}
	return NewDevice(hc, url, done.GetToken()), nil
}

// PublishApproved publishes module with the contract that contractYAML
// renders when its %s is replaced by the module's digest, and approves it;
// it returns the contract's digest and when the approval returned.
func (d *Device) PublishApproved(ctx context.Context, module []byte, contractYAML string) (string, time.Time, error) {
	pub, err := d.Policy.Publish(ctx, &contractualv1.PublishRequest{
		Module:           module,
		Contract:         fmt.Appendf(nil, contractYAML, contract.ModuleDigest(module)),
		ContractFilename: "contract.yaml",
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("publishing: %w", err)
	}
	digest := pub.GetRecord().GetDigest()
	if _, err := d.Policy.Approve(ctx, &contractualv1.ApproveRequest{Digest: digest, Reason: "load test"}); err != nil {
		return "", time.Time{}, fmt.Errorf("approving %s: %w", digest, err)
	}
	return digest, time.Now(), nil
}

// BareCall is the cheapest authenticated Connect call, the baseline of an
// invocation: it lists the contracts of a name that has none (the token
// check, the interceptor, one indexed query, an empty answer). Its
// signature is Run's.
func (d *Device) BareCall(ctx context.Context, _ int) error {
	_, err := d.Policy.ListContracts(ctx, &contractualv1.ListContractsRequest{Name: "no-such-tool"})
	return err
}

// Invoker returns a call of tool with input, as d, for Run.
func (d *Device) Invoker(tool string, input *structpb.Value) func(context.Context, int) error {
	req := &contractualv1.InvokeRequest{Tool: tool, Input: input}
	return func(ctx context.Context, _ int) error {
		_, err := d.Tools.Invoke(ctx, req)
		return err
	}
}
