package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/engine/model"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/paging"
	"github.com/contractual/contractual/internal/principal"
)

const (
	idle    = contractualv1.SessionState_SESSION_STATE_IDLE
	running = contractualv1.SessionState_SESSION_STATE_RUNNING
	closed  = contractualv1.SessionState_SESSION_STATE_CLOSED
)

// device returns the calling device, or an error: sessions are opened and
// used by paired devices only (the gateway names the device).
func device(ctx context.Context) (string, error) {
	who := principal.From(ctx)
	if !strings.HasPrefix(who, "device:") || !principal.Valid(who) {
		return "", errs.E(errs.PermissionDenied, "sessions are for paired devices, not %q", clip(who, 100))
	}
	return who, nil
}

// owned returns session id if the calling device opened it. Another
// device's session is NotFound, as if it did not exist.
func (s *Service) owned(ctx context.Context, id string) (*stored, error) {
	dev, err := device(ctx)
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, errs.E(errs.Invalid, "a session id is required")
	}
	st, err := s.getSession(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.rec.GetDevice() != dev {
		return nil, errs.E(errs.NotFound, "no session %q", clip(id, 100))
	}
	return st, nil
}

// needModel refuses when no model is configured.
func (s *Service) needModel() error {
	if s.model == nil {
		return errs.E(errs.FailedPrecondition, "the engine has no model: start it with a model and a relay tool "+
			"(`contractual serve --model gpt-4.1-mini --model-relay llm.chat`, the relay's contract approved and its secret stored) "+
			"or a loopback provider (`--model llama3.2 --model-url http://127.0.0.1:11434/v1`)")
	}
	return nil
}

// OpenSession opens a session for the calling device.
func (s *Service) OpenSession(ctx context.Context, req *contractualv1.OpenSessionRequest) (*contractualv1.OpenSessionResponse, error) {
	dev, err := device(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.needModel(); err != nil {
		return nil, err
	}
	budget, err := s.budget(req.GetBudget())
	if err != nil {
		return nil, err
	}
	if len([]rune(req.GetTitle())) > 200 || !utf8.ValidString(req.GetTitle()) {
		return nil, errs.E(errs.Invalid, "title: at most 200 characters of UTF-8")
	}
	tools, err := s.sessionTools(ctx, req.GetTools())
	if err != nil {
		return nil, err
	}
	id := newID()
	now := timestamppb.New(s.cfg.Now())
	rec := &contractualv1.Session{
		Id: id, Principal: "session:" + id, Device: dev, Title: req.GetTitle(),
		Budget: budget, Usage: &contractualv1.SessionUsage{WallTime: durationpb.New(0)},
		State: idle, CreatedAt: now, UpdatedAt: now, Model: s.cfg.Model.Model,
	}
	for _, t := range tools {
		rec.Tools = append(rec.Tools, t.Name)
	}
	if err := s.record(ctx, &contractualv1.AuditEvent{
		Principal: rec.GetPrincipal(), Action: "session.open", Outcome: "ok",
		Detail: "opened by " + dev + " with tools " + strings.Join(rec.GetTools(), ", ") + "; model " + s.cfg.Model.Model,
	}); err != nil {
		return nil, err
	}
	if err := s.insertSession(ctx, &stored{rec: rec, tools: tools}); err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "session opened", "session", id, "device", dev, "tools", len(tools))
	return &contractualv1.OpenSessionResponse{Session: rec}, nil
}

// budget fills b's zero fields from the defaults and checks the bounds.
func (s *Service) budget(b *contractualv1.SessionBudget) (*contractualv1.SessionBudget, error) {
	out := &contractualv1.SessionBudget{
		ToolCalls: DefaultToolCalls, Tokens: DefaultTokens, WallTime: durationpb.New(DefaultWallTime),
	}
	if d := s.cfg.DefaultBudget; d != nil {
		proto.Merge(out, d)
	}
	if b == nil {
		return out, nil
	}
	switch {
	case b.GetToolCalls() < 0, b.GetTokens() < 0, b.GetCostMicros() < 0, b.GetWallTime().AsDuration() < 0:
		return nil, errs.E(errs.Invalid, "budget: a negative bound")
	case b.GetToolCalls() > MaxToolCalls:
		return nil, errs.E(errs.Invalid, "budget: at most %d tool calls", MaxToolCalls)
	case b.GetTokens() > MaxTokens:
		return nil, errs.E(errs.Invalid, "budget: at most %d tokens", MaxTokens)
	case b.GetWallTime().AsDuration() > MaxWallTime:
		return nil, errs.E(errs.Invalid, "budget: at most %v of wall time", MaxWallTime)
	}
	if b.GetToolCalls() > 0 {
		out.ToolCalls = b.GetToolCalls()
	}
	if b.GetTokens() > 0 {
		out.Tokens = b.GetTokens()
	}
	if b.GetCostMicros() > 0 {
		out.CostMicros = b.GetCostMicros()
	}
	if b.GetWallTime().AsDuration() > 0 {
		out.WallTime = b.GetWallTime()
	}
	return out, nil
}

// catalogTool is a tool a session opened now may use.
type catalogTool struct {
	model.Tool
	info *contractualv1.SessionTool
}

// catalog returns the tools a session opened now may use, by name: every
// approved contract's exports but the relay tool, which is the engine's
// way to the model, not the model's way out.
func (s *Service) catalog(ctx context.Context) ([]catalogTool, error) {
	// The list is the engine's own call, not the device's.
	ctx = principal.With(ctx, principal.Service("engine"))
	byName := map[string]catalogTool{}
	req := &contractualv1.ListContractsRequest{State: contractualv1.ContractState_CONTRACT_STATE_APPROVED, PageSize: paging.MaxSize}
	for {
		resp, err := s.deps.Contracts.ListContracts(ctx, req)
		if err != nil {
			return nil, errs.Wrap(errs.Unavailable, err, "engine: listing the approved tools")
		}
		for _, rec := range resp.GetRecords() {
			k := rec.GetContract()
			for _, t := range k.GetTools() {
				name := k.GetName() + "." + t.GetExport()
				if name == s.cfg.Model.Relay {
					continue
				}
				if _, dup := byName[name]; dup {
					continue
				}
				in, err := protojson.Marshal(t.GetInputSchema())
				if err != nil {
					return nil, errs.Wrap(errs.Internal, err, "engine: the input schema of %s", name)
				}
				byName[name] = catalogTool{
					Tool: model.Tool{Name: name, InputSchema: json.RawMessage(in)},
					info: &contractualv1.SessionTool{Name: name, Description: t.GetDescription(), Risk: t.GetRisk(), ContractDigest: rec.GetDigest()},
				}
			}
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	out := slices.Collect(maps.Values(byName))
	slices.SortFunc(out, func(a, b catalogTool) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// ListTools lists the tools a session opened now may use.
func (s *Service) ListTools(ctx context.Context, _ *contractualv1.ListToolsRequest) (*contractualv1.ListToolsResponse, error) {
	if _, err := device(ctx); err != nil {
		return nil, err
	}
	cat, err := s.catalog(ctx)
	if err != nil {
		return nil, err
	}
	resp := &contractualv1.ListToolsResponse{}
	for _, t := range cat {
		resp.Tools = append(resp.Tools, t.info)
	}
	return resp, nil
}

// sessionTools returns the tools a session opened now may propose, with
// their input schemas: the whole catalog, or only want, each of which must
// be in it.
func (s *Service) sessionTools(ctx context.Context, want []string) ([]model.Tool, error) {
	cat, err := s.catalog(ctx)
	if err != nil {
		return nil, err
	}
	if len(want) == 0 {
		out := make([]model.Tool, len(cat))
		for i, t := range cat {
			out[i] = t.Tool
		}
		return out, nil
	}
	out := make([]model.Tool, 0, len(want))
	seen := map[string]bool{}
	for _, n := range want {
		i := slices.IndexFunc(cat, func(t catalogTool) bool { return t.Name == n })
		switch {
		case n == s.cfg.Model.Relay && n != "":
			return nil, errs.E(errs.Invalid, "%s is the engine's relay to the model, not a tool a session may use", n)
		case i < 0:
			return nil, errs.E(errs.Invalid, "%q is not an approved tool (<contract name>.<export> of an approved contract)", clip(n, 100))
		case !seen[n]:
			seen[n] = true
			out = append(out, cat[i].Tool)
		}
	}
	return out, nil
}

// GetSession returns one of the device's sessions and its events.
func (s *Service) GetSession(ctx context.Context, req *contractualv1.GetSessionRequest) (*contractualv1.GetSessionResponse, error) {
	st, err := s.owned(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	evs, err := s.events(ctx, st.rec.GetId(), 0, 0)
	if err != nil {
		return nil, err
	}
	return &contractualv1.GetSessionResponse{Session: st.rec, Events: evs}, nil
}

// ListSessions lists the device's sessions, newest first.
func (s *Service) ListSessions(ctx context.Context, req *contractualv1.ListSessionsRequest) (*contractualv1.ListSessionsResponse, error) {
	dev, err := device(ctx)
	if err != nil {
		return nil, err
	}
	size, err := paging.Size(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var key listKey
	var cursor *listKey
	if ok, err := paging.Decode(req.GetPageToken(), "sessions", dev, &key); err != nil {
		return nil, err
	} else if ok {
		cursor = &key
	}
	list, more, err := s.listSessions(ctx, dev, cursor, size)
	if err != nil {
		return nil, err
	}
	resp := &contractualv1.ListSessionsResponse{Sessions: list}
	if more {
		last := list[len(list)-1]
		resp.NextPageToken = paging.Encode("sessions", dev, listKey{Created: last.GetCreatedAt().AsTime().UnixNano(), ID: last.GetId()})
	}
	return resp, nil
}

// CloseSession closes one of the device's sessions, stopping its turn.
func (s *Service) CloseSession(ctx context.Context, req *contractualv1.CloseSessionRequest) (*contractualv1.CloseSessionResponse, error) {
	st, err := s.owned(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	id := st.rec.GetId()
	s.mu.Lock()
	t := s.running[id]
	s.mu.Unlock()
	if t != nil {
		t.stop(errs.E(errs.FailedPrecondition, "the session was closed during the turn"))
		<-t.done
	}
	unlock := s.lockSession(id)
	defer unlock()
	if st, err = s.getSession(ctx, id); err != nil {
		return nil, err
	}
	if st.rec.GetState() != closed {
		st.rec.State = closed
		if err := s.putRecord(ctx, st.rec); err != nil {
			return nil, err
		}
		if err := s.record(ctx, &contractualv1.AuditEvent{Principal: st.rec.GetPrincipal(), Action: "session.close", Outcome: "ok",
			Detail: "closed by " + st.rec.GetDevice()}); err != nil {
			return nil, err
		}
		s.notify(id)
	}
	return &contractualv1.CloseSessionResponse{Session: st.rec}, nil
}

// GetArtifact returns one of a session's artifacts.
func (s *Service) GetArtifact(ctx context.Context, req *contractualv1.GetArtifactRequest) (*contractualv1.GetArtifactResponse, error) {
	st, err := s.owned(ctx, req.GetSessionId())
	if err != nil {
		return nil, err
	}
	content, exp, err := s.getArtifact(ctx, st.rec.GetId(), req.GetDigest())
	if err != nil {
		return nil, err
	}
	return &contractualv1.GetArtifactResponse{Content: content, ExpiresAt: timestamppb.New(exp)}, nil
}

// Send records the owner's message, starts the turn and streams its events
// until it ends.
func (s *Service) Send(ctx context.Context, req *contractualv1.SendRequest, stream *connect.ServerStream[contractualv1.SendResponse]) error {
	st, err := s.owned(ctx, req.GetSessionId())
	if err != nil {
		return err
	}
	if err := s.needModel(); err != nil {
		return err
	}
	text := req.GetText()
	switch {
	case strings.TrimSpace(text) == "":
		return errs.E(errs.Invalid, "the message is empty")
	case len(text) > MaxMessageBytes:
		return errs.E(errs.Invalid, "the message is %d bytes; at most %d", len(text), MaxMessageBytes)
	case !utf8.ValidString(text):
		return errs.E(errs.Invalid, "the message is not UTF-8")
	}
	after, err := s.start(ctx, st.rec.GetId(), text)
	if err != nil {
		return err
	}
	return s.follow(ctx, st.rec.GetId(), after, true, true, func(ev *contractualv1.SessionEvent) error {
		return stream.Send(&contractualv1.SendResponse{Event: ev})
	})
}

// WatchSession streams a session's events after a seq.
func (s *Service) WatchSession(ctx context.Context, req *contractualv1.WatchSessionRequest, stream *connect.ServerStream[contractualv1.WatchSessionResponse]) error {
	st, err := s.owned(ctx, req.GetSessionId())
	if err != nil {
		return err
	}
	if req.GetAfterSeq() < 0 {
		return errs.E(errs.Invalid, "after_seq is negative")
	}
	return s.follow(ctx, st.rec.GetId(), req.GetAfterSeq(), req.GetFollow(), false, func(ev *contractualv1.SessionEvent) error {
		return stream.Send(&contractualv1.WatchSessionResponse{Event: ev})
	})
}

// follow sends session's events after seq; with wait, it keeps sending the
// running turn's events until it ends (untilEnd: until a TURN_END or
// TURN_FAILED event, which Send's stream ends with).
func (s *Service) follow(ctx context.Context, session string, after int64, wait, untilEnd bool, send func(*contractualv1.SessionEvent) error) error {
	for {
		changed := s.changed(session)
		evs, err := s.events(ctx, session, after, 500)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := send(ev); err != nil {
				return err
			}
			after = ev.GetSeq()
			if untilEnd && isEnd(ev.GetKind()) {
				return nil
			}
		}
		if len(evs) == 500 {
			continue
		}
		if !wait {
			return nil
		}
		s.mu.Lock()
		_, busy := s.running[session]
		s.mu.Unlock()
		if !busy && !untilEnd {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func isEnd(k contractualv1.SessionEventKind) bool {
	return k == contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_END ||
		k == contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED
}

// changed returns a channel that is closed when session gets a new event
// or its turn ends.
func (s *Service) changed(session string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watch == nil {
		s.watch = map[string]chan struct{}{}
	}
	ch := s.watch[session]
	if ch == nil {
		ch = make(chan struct{})
		s.watch[session] = ch
	}
	return ch
}

// notify wakes session's watchers.
func (s *Service) notify(session string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch := s.watch[session]; ch != nil {
		close(ch)
		delete(s.watch, session)
	}
}

// lockSession serializes the changes of one session's record.
func (s *Service) lockSession(id string) func() {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*sessionLock{}
	}
	l := s.locks[id]
	if l == nil {
		l = &sessionLock{}
		s.locks[id] = l
	}
	l.users++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.locks, id)
		}
		s.mu.Unlock()
	}
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
