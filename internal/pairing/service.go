package pairing

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/paging"
	"github.com/contractual/contractual/internal/principal"
)

// Service is the PairingService over a Store: the one place where pairing's
// protobuf messages meet its domain types.
type Service struct{ store *Store }

var _ contractualv1connect.PairingServiceHandler = (*Service)(nil)

// NewService returns the PairingService for store.
func NewService(store *Store) *Service { return &Service{store: store} }

// BeginPairing asks to pair a device, with the scopes it names (none:
// owner).
func (s *Service) BeginPairing(ctx context.Context, req *contractualv1.BeginPairingRequest) (*contractualv1.BeginPairingResponse, error) {
	if len(req.GetPublicKey()) != ed25519.PublicKeySize {
		return nil, errs.E(errs.Invalid, "public_key must be a raw %d-byte Ed25519 key, not %d bytes", ed25519.PublicKeySize, len(req.GetPublicKey()))
	}
	scopes := ScopeOwner
	if len(req.GetScopes()) > 0 {
		var err error
		if scopes, err = ParseScopes(req.GetScopes()...); err != nil {
			return nil, err
		}
	}
	r, err := s.store.Begin(ctx, ed25519.PublicKey(req.GetPublicKey()), req.GetName(), scopes, kindFromProto(req.GetKind()))
	if err != nil {
		return nil, err
	}
	return &contractualv1.BeginPairingResponse{
		Code: r.Code, DeviceId: r.DeviceID, Nonce: r.Nonce, ExpiresAt: timestamppb.New(r.ExpiresAt), Scopes: r.Scopes.Names(),
	}, nil
}

// ApproveWithSetupCode approves the first device with the setup code.
func (s *Service) ApproveWithSetupCode(ctx context.Context, req *contractualv1.ApproveWithSetupCodeRequest) (*contractualv1.ApproveWithSetupCodeResponse, error) {
	if err := s.store.ApproveWithSetupCode(ctx, req.GetRequestCode(), req.GetSetupCode()); err != nil {
		return nil, err
	}
	return &contractualv1.ApproveWithSetupCodeResponse{}, nil
}

// CompletePairing proves possession and returns the device's token, once.
func (s *Service) CompletePairing(ctx context.Context, req *contractualv1.CompletePairingRequest) (*contractualv1.CompletePairingResponse, error) {
	tok, id, err := s.store.Complete(ctx, req.GetDeviceId(), req.GetNonce(), req.GetSignature())
	if err != nil {
		return nil, err
	}
	return &contractualv1.CompletePairingResponse{
		Token: tok, Principal: id.Principal, Scopes: id.Scopes.Names(), ExpiresAt: timestamppb.New(id.ExpiresAt),
	}, nil
}

// ApprovePairing approves a pending request, as the calling device.
func (s *Service) ApprovePairing(ctx context.Context, req *contractualv1.ApprovePairingRequest) (*contractualv1.ApprovePairingResponse, error) {
	if err := s.store.Approve(ctx, req.GetCode(), principal.From(ctx)); err != nil {
		return nil, err
	}
	return &contractualv1.ApprovePairingResponse{}, nil
}

// RejectPairing rejects a pending request, as the calling device.
func (s *Service) RejectPairing(ctx context.Context, req *contractualv1.RejectPairingRequest) (*contractualv1.RejectPairingResponse, error) {
	if err := s.store.Reject(ctx, req.GetCode(), principal.From(ctx)); err != nil {
		return nil, err
	}
	return &contractualv1.RejectPairingResponse{}, nil
}

// ListPairingRequests lists pending requests, oldest first, a page at a
// time (see internal/paging).
func (s *Service) ListPairingRequests(ctx context.Context, req *contractualv1.ListPairingRequestsRequest) (*contractualv1.ListPairingRequestsResponse, error) {
	n, err := paging.Size(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var after Cursor
	ok, err := paging.Decode(req.GetPageToken(), "pairing-requests", "", &after)
	if err != nil {
		return nil, err
	}
	rs, next, err := s.store.RequestPage(ctx, cursorIf(ok, after), n)
	if err != nil {
		return nil, err
	}
	out := &contractualv1.ListPairingRequestsResponse{}
	for _, r := range rs {
		out.Requests = append(out.Requests, &contractualv1.PairingRequest{
			Code: r.Code, DeviceId: r.DeviceID, Name: r.Name,
			CreatedAt: timestamppb.New(r.CreatedAt), ExpiresAt: timestamppb.New(r.ExpiresAt),
			Scopes: r.Scopes.Names(), Kind: kindToProto(r.Kind),
		})
	}
	if next != nil {
		out.NextPageToken = paging.Encode("pairing-requests", "", next)
	}
	return out, nil
}

// ListDevices lists paired devices in pairing order, a page at a time (see
// internal/paging), only those in the request's state and with its scope
// when they are set.
func (s *Service) ListDevices(ctx context.Context, req *contractualv1.ListDevicesRequest) (*contractualv1.ListDevicesResponse, error) {
	f, err := deviceFilterOf(req)
	if err != nil {
		return nil, err
	}
	n, err := paging.Size(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("state=%d scope=%d", f.State, f.Scope)
	var after Cursor
	ok, err := paging.Decode(req.GetPageToken(), "devices", key, &after)
	if err != nil {
		return nil, err
	}
	ds, next, err := s.store.DevicePage(ctx, f, cursorIf(ok, after), n)
	if err != nil {
		return nil, err
	}
	out := &contractualv1.ListDevicesResponse{}
	for _, d := range ds {
		out.Devices = append(out.Devices, &contractualv1.Device{
			Id: d.ID, Name: d.Name, PairedAt: timestamppb.New(d.PairedAt), ApprovedBy: d.ApprovedBy, RevokedAt: optionalTime(d.RevokedAt),
			Scopes: d.Scopes.Names(), Kind: kindToProto(d.Kind),
			LastUsedAt: timestamppb.New(d.LastUsedAt), ExpiresAt: timestamppb.New(d.ExpiresAt),
			Tailnet: d.Tailnet.Proto(),
		})
	}
	if next != nil {
		out.NextPageToken = paging.Encode("devices", key, next)
	}
	return out, nil
}

// deviceFilterOf reads and checks the filters of req.
func deviceFilterOf(req *contractualv1.ListDevicesRequest) (DeviceFilter, error) {
	var f DeviceFilter
	switch st := req.GetState(); st {
	case contractualv1.DeviceState_DEVICE_STATE_UNSPECIFIED:
	case contractualv1.DeviceState_DEVICE_STATE_ACTIVE:
		f.State = DeviceActive
	case contractualv1.DeviceState_DEVICE_STATE_REVOKED:
		f.State = DeviceRevoked
	case contractualv1.DeviceState_DEVICE_STATE_EXPIRED:
		f.State = DeviceExpired
	default:
		return f, errs.E(errs.Invalid, "pairing: state %d is not a device state", int32(st))
	}
	if sc := req.GetScope(); sc != "" {
		var err error
		if f.Scope, err = ParseScopes(sc); err != nil {
			return f, err
		}
		if len(f.Scope.Names()) != 1 {
			return f, errs.E(errs.Invalid, "pairing: scope filters by one scope, not %s", f.Scope)
		}
	}
	return f, nil
}

// cursorIf returns &c if ok, else nil (the first page).
func cursorIf(ok bool, c Cursor) *Cursor {
	if !ok {
		return nil
	}
	return &c
}

// RevokeDevice revokes a device's token, at once.
func (s *Service) RevokeDevice(ctx context.Context, req *contractualv1.RevokeDeviceRequest) (*contractualv1.RevokeDeviceResponse, error) {
	if err := s.store.Revoke(ctx, req.GetDeviceId(), principal.From(ctx)); err != nil {
		return nil, err
	}
	return &contractualv1.RevokeDeviceResponse{}, nil
}

// Unpair revokes the calling device itself: signing out.
func (s *Service) Unpair(ctx context.Context, _ *contractualv1.UnpairRequest) (*contractualv1.UnpairResponse, error) {
	id, ok := strings.CutPrefix(principal.From(ctx), "device:")
	if !ok {
		return nil, errs.E(errs.PermissionDenied, "pairing: only a paired device can unpair itself")
	}
	if err := s.store.Revoke(ctx, id, Principal(id)); err != nil {
		return nil, err
	}
	return &contractualv1.UnpairResponse{}, nil
}

// kindFromProto maps the API's device kind; unspecified is a client.
func kindFromProto(k contractualv1.DeviceKind) Kind {
	if k == contractualv1.DeviceKind_DEVICE_KIND_BROWSER {
		return KindBrowser
	}
	return KindClient
}

// kindToProto maps a device kind to the API's.
func kindToProto(k Kind) contractualv1.DeviceKind {
	if k == KindBrowser {
		return contractualv1.DeviceKind_DEVICE_KIND_BROWSER
	}
	return contractualv1.DeviceKind_DEVICE_KIND_CLIENT
}

func optionalTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
