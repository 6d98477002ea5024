package ui

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
)

// TestGuardsNameTheirProcedures: every method of every guard either
// authorizes the very procedure it is named for (a call without an
// identity is refused naming it), or is one of pairing's open procedures,
// or is not implemented: no service call of the UI can pass unchecked or
// be checked against another procedure's scope.
func TestGuardsNameTheirProcedures(t *testing.T) {
	open := map[string]bool{"BeginPairing": true, "ApproveWithSetupCode": true, "CompletePairing": true}
	guards := map[string]any{
		"PolicyService":  policyGuard{next: contractualv1connect.UnimplementedPolicyServiceHandler{}},
		"PairingService": pairingGuard{next: contractualv1connect.UnimplementedPairingServiceHandler{}},
		"BrokerService":  brokerGuard{next: contractualv1connect.UnimplementedBrokerServiceHandler{}},
		"AuditService":   auditGuard{next: contractualv1connect.UnimplementedAuditServiceHandler{}},
	}
	guarded := 0
	for svc, g := range guards {
		v := reflect.ValueOf(g)
		for i := range v.NumMethod() {
			m := v.Type().Method(i)
			req := reflect.New(m.Type.In(2).Elem())
			out := v.Method(i).Call([]reflect.Value{reflect.ValueOf(context.Background()), req})
			err, _ := out[1].Interface().(error)
			proc := "/contractual.v1." + svc + "/" + m.Name
			switch {
			case errs.Is(err, errs.Unauthenticated):
				guarded++
				if !strings.HasPrefix(err.Error(), proc+" needs a paired device") {
					t.Errorf("%s.%s authorizes another procedure: %v", svc, m.Name, err)
				}
			case connect.CodeOf(err) == connect.CodeUnimplemented:
				if open[m.Name] && svc == "PairingService" {
					continue // passed through to next, as it should
				}
				if strings.Contains(err.Error(), "not implemented") && !strings.Contains(err.Error(), m.Name) {
					t.Errorf("%s.%s: %v", svc, m.Name, err)
				}
			default:
				t.Errorf("%s.%s without an identity: %v", svc, m.Name, err)
			}
		}
	}
	if guarded != 21 {
		t.Errorf("%d guarded methods, want the 21 the UI calls", guarded)
	}
}
