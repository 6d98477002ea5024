package audit

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
)

func TestServiceValidatesAppend(t *testing.T) {
	with := func(f func(e *contractualv1.AuditEvent)) []*contractualv1.AuditEvent {
		e := event(1)
		f(e)
		return []*contractualv1.AuditEvent{e}
	}
	many := make([]*contractualv1.AuditEvent, MaxAppend+1)
	for i := range many {
		many[i] = event(i)
	}
	tests := []struct {
		name   string
		events []*contractualv1.AuditEvent
		msg    string
	}{
		{"no events", nil, "no events to append"},
		{"too many events", many, "1001 events in one append, over the limit of 1000"},
		{"nil event", []*contractualv1.AuditEvent{event(1), nil}, "events[1]: no event"},
		{"empty action", with(func(e *contractualv1.AuditEvent) { e.Action = "" }), "events[0]: action is empty"},
		{"odd action", with(func(e *contractualv1.AuditEvent) { e.Action = "Call Run" }), `action "Call Run" is not`},
		{"long action", with(func(e *contractualv1.AuditEvent) { e.Action = strings.Repeat("a", 65) }), "action is 65 bytes"},
		{"long detail", with(func(e *contractualv1.AuditEvent) { e.Detail = strings.Repeat("x", MaxDetailBytes+1) }), "detail is 4097 bytes, over 4096"},
		{"bad UTF-8", with(func(e *contractualv1.AuditEvent) { e.Principal = "device:\xff" }), "principal is not valid UTF-8"},
		{"long digest", with(func(e *contractualv1.AuditEvent) { e.ContractDigest = strings.Repeat("a", 200) }), "contract_digest is 200 bytes"},
		{"negative duration", with(func(e *contractualv1.AuditEvent) { e.DurationUs = -1 }), "duration_us is negative"},
		{"nil egress record", with(func(e *contractualv1.AuditEvent) { e.Egress = append(e.Egress, nil) }), "egress[1]: no record"},
		{"bad status", with(func(e *contractualv1.AuditEvent) { e.Egress[0].Status = 1000 }), "egress[0]: status 1000"},
		{"negative bytes", with(func(e *contractualv1.AuditEvent) { e.Egress[0].Bytes = -5 }), "egress[0]: bytes is negative"},
		{"too many egress records", with(func(e *contractualv1.AuditEvent) {
			e.Egress = make([]*contractualv1.EgressRecord, MaxEgressRecords+1)
		}), "6001 egress records"},
	}
	svc := NewService(mustOpen(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := svc.Append(context.Background(), &contractualv1.AppendRequest{Events: tt.events})
			wantKind(t, err, errs.Invalid)
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q does not say %q", err, tt.msg)
			}
		})
	}
	// Nothing was written by any of them.
	res, err := svc.Verify(context.Background(), &contractualv1.VerifyRequest{})
	if err != nil || !res.GetOk() || res.GetEvents() != 0 {
		t.Fatalf("verify: %v %v", res, err)
	}
}

// mustOpen opens a store that the test closes.
func mustOpen(t *testing.T) *Store {
	s, _ := newStore(t, Options{})
	return s
}

func TestServiceIgnoresCallerIndexTimeHash(t *testing.T) {
	svc := NewService(mustOpen(t))
	e := event(1)
	past := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	e.Index, e.Time, e.Hash = 42, timestamppb.New(past), []byte("junk")
	resp, err := svc.Append(context.Background(), &contractualv1.AppendRequest{Events: []*contractualv1.AuditEvent{e, event(2)}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetIndexes(); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("indexes %v, want [1 2]", got)
	}
	tail, err := svc.Tail(context.Background(), &contractualv1.TailRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := tail.GetEvents()[0]
	if got.GetIndex() != 1 || got.GetTime().AsTime().Equal(past) || bytes.Equal(got.GetHash(), []byte("junk")) {
		t.Fatalf("the caller's index, time or hash was kept: %v", got)
	}
}

// TestServiceOverConnect runs the service behind its Connect handler.
func TestServiceOverConnect(t *testing.T) {
	svc := NewService(mustOpen(t))
	mux := http.NewServeMux()
	mux.Handle(contractualv1connect.NewAuditServiceHandler(svc))
	mux.Handle(contractualv1connect.NewAuditInternalServiceHandler(svc))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := contractualv1connect.NewAuditServiceClient(srv.Client(), srv.URL)
	appender := contractualv1connect.NewAuditInternalServiceClient(srv.Client(), srv.URL)
	ctx := context.Background()

	resp, err := appender.Append(ctx, &contractualv1.AppendRequest{Events: []*contractualv1.AuditEvent{event(1), event(2), event(3)}})
	if err != nil || len(resp.GetIndexes()) != 3 {
		t.Fatalf("append: %v %v", resp, err)
	}
	tail, err := client.Tail(ctx, &contractualv1.TailRequest{Limit: 2, After: 0})
	if err != nil || len(tail.GetEvents()) != 2 || tail.GetEvents()[0].GetIndex() != 2 {
		t.Fatalf("tail: %v %v", tail, err)
	}
	res, err := client.Verify(ctx, &contractualv1.VerifyRequest{})
	if err != nil || !res.GetOk() || res.GetEvents() != 3 {
		t.Fatalf("verify: %v %v", res, err)
	}
	_, err = appender.Append(ctx, &contractualv1.AppendRequest{})
	if err == nil {
		t.Fatal("empty append accepted")
	}
}

func TestOpenService(t *testing.T) {
	svc, err := OpenService(context.Background(), Config{Dir: t.TempDir()}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Append(context.Background(), &contractualv1.AppendRequest{Events: []*contractualv1.AuditEvent{event(1)}}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if svc.Store() == nil {
		t.Fatal("no store")
	}
}
