package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/rpc"
)

// Chat: the owner's sessions with the engine (SessionService). The list
// of this browser's sessions with a form to open one (the tools from the
// approved contracts, budgets), and the page of one session: its
// transcript, where every proposal shows its tool, input and, beside it,
// policy's decision and the result; usage against the budgets; a form to
// send the next message. A message is sent by a POST that reads the turn's
// events for a few seconds (sendWait) and then redirects to the page,
// which refreshes itself while the turn runs (a call held for the owner's
// approval waits there, linked to its approval). Everything the model
// and the tools said is untrusted text: the templates escape it like any
// other, and JSON output is shown decoded, so that escaped markup in it
// reads as the text it is.

// noChat is the message of the chat pages of a UI without the engine.
const noChat = "Chat is not available here: this gateway runs without the engine."

// sendWait is how long a send waits for its turn to end, once it has
// started, before showing the session page, which then refreshes until the
// turn ends; sendStartWait bounds the wait for the turn to start (the
// owner's message recorded).
// sendPoll is how often it looks.
const (
	sendWait      = 4 * time.Second
	sendStartWait = time.Minute
	sendPoll      = 200 * time.Millisecond
)

// Bounds of the chat forms.
const (
	maxMessageBytes = 32 << 10 // engine.MaxMessageBytes
	maxTitleRunes   = 200
	maxToolsPosted  = 1000
	clipResult      = 4 << 10 // a result shown in the transcript
	maxResultLines  = 80
)

// sessionGuard authorizes the UI's calls of the engine's SessionService.
type sessionGuard struct {
	next contractualv1connect.SessionServiceClient
}

func (g sessionGuard) OpenSession(ctx context.Context, req *contractualv1.OpenSessionRequest) (*contractualv1.OpenSessionResponse, error) {
	return call(ctx, contractualv1connect.SessionServiceOpenSessionProcedure, g.next.OpenSession, req)
}

func (g sessionGuard) ListTools(ctx context.Context, req *contractualv1.ListToolsRequest) (*contractualv1.ListToolsResponse, error) {
	return call(ctx, contractualv1connect.SessionServiceListToolsProcedure, g.next.ListTools, req)
}

// Send authorizes, then opens the turn's stream; the stream's errors are
// the project's kinds.
func (g sessionGuard) Send(ctx context.Context, req *contractualv1.SendRequest) (*connect.ServerStreamForClient[contractualv1.SendResponse], error) {
	return call(ctx, contractualv1connect.SessionServiceSendProcedure, g.next.Send, req)
}

func (g sessionGuard) WatchSession(ctx context.Context, req *contractualv1.WatchSessionRequest) (*connect.ServerStreamForClient[contractualv1.WatchSessionResponse], error) {
	return call(ctx, contractualv1connect.SessionServiceWatchSessionProcedure, g.next.WatchSession, req)
}

func (g sessionGuard) GetSession(ctx context.Context, req *contractualv1.GetSessionRequest) (*contractualv1.GetSessionResponse, error) {
	return call(ctx, contractualv1connect.SessionServiceGetSessionProcedure, g.next.GetSession, req)
}

func (g sessionGuard) ListSessions(ctx context.Context, req *contractualv1.ListSessionsRequest) (*contractualv1.ListSessionsResponse, error) {
	return call(ctx, contractualv1connect.SessionServiceListSessionsProcedure, g.next.ListSessions, req)
}

func (g sessionGuard) CloseSession(ctx context.Context, req *contractualv1.CloseSessionRequest) (*contractualv1.CloseSessionResponse, error) {
	return call(ctx, contractualv1connect.SessionServiceCloseSessionProcedure, g.next.CloseSession, req)
}

func (g sessionGuard) GetArtifact(ctx context.Context, req *contractualv1.GetArtifactRequest) (*contractualv1.GetArtifactResponse, error) {
	return call(ctx, contractualv1connect.SessionServiceGetArtifactProcedure, g.next.GetArtifact, req)
}

// chatRoutes registers the chat pages and forms.
func (u *UI) chatRoutes() {
	u.route("/ui/chat", u.authed(u.chatPage), u.authed(u.openSession))
	u.route("/ui/chat/{id}", u.authed(u.sessionPage), nil)
	u.route("/ui/chat/{id}/send", nil, u.authed(u.sendMessage))
	u.route("/ui/chat/{id}/close", nil, u.authed(u.closeSession))
	u.route("/ui/chat/{id}/artifacts/{digest}", u.authed(u.artifact), nil)
}

// badSessionID is the message for a malformed session id in a URL.
var badSessionID = errs.E(errs.Invalid, "a session id is 32 lowercase hex digits")

// stateWord is a session state as a word.
func stateWord(st contractualv1.SessionState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "SESSION_STATE_"))
}

// ---- the list and the open form

type chatData struct {
	Sessions []sessionRow
	Pager    pager
	// Tools are the approved tools the form offers, all checked unless
	// the form came back with a choice.
	Tools []toolChoice
	// Budget defaults, as the form shows them.
	Defaults budgetForm
}

type sessionRow struct {
	*contractualv1.Session
	State string
}

type toolChoice struct {
	Name, Risk string
	Checked    bool
}

// budgetForm are the budget fields of the open form; empty means the
// engine's default.
type budgetForm struct {
	Calls, Tokens, Minutes string
}

func (u *UI) chatPageSpec() page {
	return page{name: "chat", title: "Chat", nav: "chat", load: u.loadChat}
}

func (u *UI) chatPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, u.chatPageSpec(), http.StatusOK, "", nil)
}

func (u *UI) loadChat(ctx context.Context, r *http.Request, _ *session) (any, error) {
	if u.sessions == nil {
		return nil, errs.E(errs.Unimplemented, noChat)
	}
	pos := listPosOf(r, "/ui/chat")
	resp, err := u.sessions.ListSessions(ctx, &contractualv1.ListSessionsRequest{PageSize: listPage, PageToken: pos.token})
	if err != nil {
		return nil, err
	}
	d := chatData{Pager: pos.pager(resp.GetNextPageToken())}
	for _, se := range resp.GetSessions() {
		d.Sessions = append(d.Sessions, sessionRow{Session: se, State: stateWord(se.GetState())})
	}
	if d.Tools, err = u.approvedTools(ctx); err != nil {
		return nil, err
	}
	if r.Method == http.MethodPost {
		// The form came back with an error: show the owner's choice.
		chosen := r.PostForm["tool"]
		for i := range d.Tools {
			d.Tools[i].Checked = slices.Contains(chosen, d.Tools[i].Name)
		}
		d.Defaults = budgetForm{Calls: r.PostForm.Get("max_calls"), Tokens: r.PostForm.Get("max_tokens"), Minutes: r.PostForm.Get("max_minutes")}
	}
	return d, nil
}

// approvedTools lists the tools a session may use (the engine's list:
// every approved export but its relay to the model), by name, all
// checked; the form offers them.
func (u *UI) approvedTools(ctx context.Context) ([]toolChoice, error) {
	resp, err := u.sessions.ListTools(ctx, &contractualv1.ListToolsRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]toolChoice, 0, len(resp.GetTools()))
	for _, t := range resp.GetTools() {
		out = append(out, toolChoice{Name: t.GetName(), Risk: strings.ToLower(strings.TrimPrefix(t.GetRisk().String(), "RISK_")), Checked: true})
	}
	return out, nil
}

// openSession opens a session with the checked tools and the budgets,
// then shows it.
func (u *UI) openSession(w http.ResponseWriter, r *http.Request, s *session) {
	fail := func(status int, msg string) { u.show(w, r, s, u.chatPageSpec(), status, msg, nil) }
	if u.sessions == nil {
		u.failErr(w, r, s, errs.E(errs.Unimplemented, noChat))
		return
	}
	title, fe := field(r, "title", "The title", maxTitleRunes)
	if fe != nil {
		fail(fe.status, fe.msg)
		return
	}
	tools := r.PostForm["tool"]
	if len(tools) == 0 {
		fail(http.StatusBadRequest, "Choose at least one tool for the session.")
		return
	}
	if len(tools) > maxToolsPosted {
		fail(http.StatusBadRequest, "The form sent too many tools.")
		return
	}
	for _, t := range tools {
		if t == "" || len(t) > 200 || !utf8.ValidString(t) {
			fail(http.StatusBadRequest, "The form sent a tool name that is not one.")
			return
		}
	}
	budget := &contractualv1.SessionBudget{}
	calls, err := intField(r, "max_calls", "The tool call budget", 1<<31-1)
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	budget.ToolCalls = int32(calls)
	if budget.Tokens, err = intField(r, "max_tokens", "The token budget", 1<<62); err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	minutes, err := intField(r, "max_minutes", "The time budget", 1<<20)
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	if minutes > 0 {
		budget.WallTime = durationpb.New(time.Duration(minutes) * time.Minute)
	}
	// Every tool checked: ask for the engine's default, the same list.
	// The session must not get a tool the owner did not see: one approved
	// meanwhile closes it.
	req := &contractualv1.OpenSessionRequest{Tools: tools, Budget: budget, Title: strings.TrimSpace(title)}
	approved, err := u.approvedTools(s.ctx)
	if err != nil {
		fail(u.publicError(r, err))
		return
	}
	if allChecked(approved, tools) {
		req.Tools = nil
	}
	resp, err := u.sessions.OpenSession(s.ctx, req)
	if err != nil {
		fail(u.publicError(r, err))
		return
	}
	for _, t := range resp.GetSession().GetTools() {
		if !slices.Contains(tools, t) {
			if _, err := u.sessions.CloseSession(s.ctx, &contractualv1.CloseSessionRequest{Id: resp.GetSession().GetId()}); err != nil {
				u.log.Warn("ui: closing a session opened with a tool not chosen", "session", resp.GetSession().GetId(), "err", err)
			}
			fail(http.StatusConflict, "The approved tools changed while you chose ("+t+" is new): choose them again. The session opened with it was closed unused.")
			return
		}
	}
	http.Redirect(w, r, "/ui/chat/"+resp.GetSession().GetId()+"?done=session-opened", http.StatusSeeOther)
}

// allChecked reports whether chosen holds every tool of approved.
func allChecked(approved []toolChoice, chosen []string) bool {
	for _, t := range approved {
		if !slices.Contains(chosen, t.Name) {
			return false
		}
	}
	return len(approved) > 0
}

// intField reads a non-negative whole number of at most max from the form;
// empty is 0 (the engine's default).
func intField(r *http.Request, name, what string, max int64) (int64, error) {
	v, fe := field(r, name, what, 20)
	if fe != nil {
		return 0, errors.New(fe.msg)
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > max {
		return 0, errors.New(what + " must be a whole number from 0 (the default) to " + strconv.FormatInt(max, 10) + ".")
	}
	return n, nil
}

// ---- one session

// sessionData is the page of one session.
type sessionData struct {
	*contractualv1.Session
	State   string
	Running bool
	Closed  bool
	Items   []chatItem
	Usage   []usageRow
}

// Refreshing makes the page reload itself (every 2 seconds: the layout's
// meta refresh) while a turn runs.
func (d sessionData) Refreshing() bool { return d.Running }

// chatItem is one entry of the transcript: a message (Kind "user",
// "answer", "failed", "end") or a call (Kind "call").
type chatItem struct {
	Kind string
	Seq  int64
	Text string
	Call *callItem
}

// callItem is one proposal with what became of it.
type callItem struct {
	ID, Tool string
	// Input is the proposal's input, indented.
	Input     string
	Decisions []decisionItem
	// ApprovalID is the one-shot approval the call waits or waited for.
	ApprovalID string
	Result     *resultItem
}

type decisionItem struct {
	// Verdict is "allowed", "denied" or "held".
	Verdict, Reason, ID string
}

type resultItem struct {
	Output   string
	Clipped  bool
	Error    bool
	Bytes    int64
	SHA256   string
	Artifact string
}

// usageRow is one budget and what the session spent of it.
type usageRow struct {
	Name, Used, Budget string
	Over               bool
}

func (u *UI) sessionPageSpec() page {
	return page{name: "session", title: "Chat session", nav: "chat", load: u.loadSession}
}

func (u *UI) sessionPage(w http.ResponseWriter, r *http.Request, s *session) {
	u.show(w, r, s, u.sessionPageSpec(), http.StatusOK, "", nil)
}

func (u *UI) loadSession(ctx context.Context, r *http.Request, _ *session) (any, error) {
	if u.sessions == nil {
		return nil, errs.E(errs.Unimplemented, noChat)
	}
	id := r.PathValue("id")
	if !approvalIDOK(id) {
		return nil, badSessionID
	}
	resp, err := u.sessions.GetSession(ctx, &contractualv1.GetSessionRequest{Id: id})
	if err != nil {
		return nil, err
	}
	se := resp.GetSession()
	return sessionData{
		Session: se, State: stateWord(se.GetState()),
		Running: se.GetState() == contractualv1.SessionState_SESSION_STATE_RUNNING,
		Closed:  se.GetState() == contractualv1.SessionState_SESSION_STATE_CLOSED,
		Items:   transcript(resp.GetEvents()),
		Usage:   usageRows(se.GetUsage(), se.GetBudget()),
	}, nil
}

// transcript groups a session's events: each proposal with its
// decisions, its approval and its result.
func transcript(evs []*contractualv1.SessionEvent) []chatItem {
	var items []chatItem
	calls := map[string]*callItem{}
	callOf := func(e *contractualv1.SessionEvent) *callItem {
		if c, ok := calls[e.GetCallId()]; ok && e.GetCallId() != "" {
			return c
		}
		c := &callItem{ID: e.GetCallId(), Tool: e.GetTool()}
		calls[e.GetCallId()] = c
		items = append(items, chatItem{Kind: "call", Seq: e.GetSeq(), Call: c})
		return c
	}
	for _, e := range evs {
		switch e.GetKind() {
		case contractualv1.SessionEventKind_SESSION_EVENT_KIND_USER:
			items = append(items, chatItem{Kind: "user", Seq: e.GetSeq(), Text: e.GetText()})
		case contractualv1.SessionEventKind_SESSION_EVENT_KIND_ANSWER:
			items = append(items, chatItem{Kind: "answer", Seq: e.GetSeq(), Text: e.GetText()})
		case contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED:
			items = append(items, chatItem{Kind: "failed", Seq: e.GetSeq(), Text: e.GetText()})
		case contractualv1.SessionEventKind_SESSION_EVENT_KIND_PROPOSAL:
			c := callOf(e)
			c.Input, _ = chatText(e.GetInput(), clipResult, maxResultLines)
		case contractualv1.SessionEventKind_SESSION_EVENT_KIND_DECISION:
			c := callOf(e)
			c.Decisions = append(c.Decisions, decisionItem{Verdict: verdictWord(e.GetVerdict()), Reason: e.GetReason(), ID: e.GetDecisionId()})
		case contractualv1.SessionEventKind_SESSION_EVENT_KIND_APPROVAL_AWAITED:
			c := callOf(e)
			if approvalIDOK(e.GetApprovalId()) {
				c.ApprovalID = e.GetApprovalId()
			}
		case contractualv1.SessionEventKind_SESSION_EVENT_KIND_RESULT:
			c := callOf(e)
			out, clipped := chatText(e.GetOutput(), clipResult, maxResultLines)
			res := &resultItem{Output: out, Clipped: clipped, Error: e.GetError(), Bytes: e.GetOutputBytes(), SHA256: e.GetOutputSha256()}
			if digestOK(e.GetArtifact()) {
				res.Artifact = e.GetArtifact()
			}
			c.Result = res
		}
	}
	return items
}

// verdictWord names a decision as the transcript shows it.
func verdictWord(v contractualv1.Verdict) string {
	switch v {
	case contractualv1.Verdict_VERDICT_ALLOW:
		return "allowed"
	case contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED:
		return "held"
	}
	return "denied"
}

// chatText is text for the page: JSON decoded and indented (so that
// what it escaped, such as "\u003c", reads as itself; the template
// escapes it for HTML), else the text; clipped to max bytes and lines.
func chatText(s string, maxBytes, maxLines int) (string, bool) {
	text := s
	var v any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if dec.Decode(&v) == nil && !dec.More() {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if enc.Encode(v) == nil {
			text = strings.TrimSuffix(b.String(), "\n")
		}
	}
	clipped := false
	if len(text) > maxBytes {
		text, clipped = strings.ToValidUTF8(text[:maxBytes], ""), true
	}
	if lines := strings.SplitAfter(text, "\n"); len(lines) > maxLines {
		text, clipped = strings.Join(lines[:maxLines], ""), true
	}
	return text, clipped
}

// usageRows sets what a session spent beside its budgets.
func usageRows(us *contractualv1.SessionUsage, b *contractualv1.SessionBudget) []usageRow {
	tokens := us.GetPromptTokens() + us.GetCompletionTokens()
	rows := []usageRow{
		{Name: "tool calls", Used: strconv.Itoa(int(us.GetToolCalls())), Budget: strconv.Itoa(int(b.GetToolCalls())), Over: b.GetToolCalls() > 0 && us.GetToolCalls() >= b.GetToolCalls()},
		{Name: "tokens", Used: strconv.FormatInt(tokens, 10), Budget: strconv.FormatInt(b.GetTokens(), 10), Over: b.GetTokens() > 0 && tokens >= b.GetTokens()},
		{Name: "wall time", Used: us.GetWallTime().AsDuration().Round(time.Second).String(), Budget: b.GetWallTime().AsDuration().String(),
			Over: b.GetWallTime() != nil && us.GetWallTime().AsDuration() >= b.GetWallTime().AsDuration()},
	}
	cost := usageRow{Name: "cost (millionths)", Used: strconv.FormatInt(us.GetCostMicros(), 10), Budget: "unbounded"}
	if b.GetCostMicros() > 0 {
		cost.Budget, cost.Over = strconv.FormatInt(b.GetCostMicros(), 10), us.GetCostMicros() >= b.GetCostMicros()
	}
	rows = append(rows, cost,
		usageRow{Name: "turns", Used: strconv.Itoa(int(us.GetTurns())), Budget: "—"},
		usageRow{Name: "model requests", Used: strconv.Itoa(int(us.GetModelRequests())), Budget: "—"})
	return rows
}

// sendMessage sends the owner's message, reads the turn's events until it
// ends or sendWait passes, and shows the session; the turn goes on
// without the page (the engine runs it to its end).
func (u *UI) sendMessage(w http.ResponseWriter, r *http.Request, s *session) {
	if u.sessions == nil {
		u.failErr(w, r, s, errs.E(errs.Unimplemented, noChat))
		return
	}
	id := r.PathValue("id")
	if !approvalIDOK(id) {
		u.failErr(w, r, s, badSessionID)
		return
	}
	vs := r.PostForm["text"]
	fail := func(status int, msg string) {
		u.show(w, r, s, u.sessionPageSpec(), status, msg, map[string]string{"text": keepText(vs)})
	}
	switch {
	case len(vs) != 1 || strings.TrimSpace(vs[0]) == "":
		fail(http.StatusBadRequest, "The message is empty.")
		return
	case len(vs[0]) > maxMessageBytes:
		fail(http.StatusBadRequest, "The message is "+strconv.Itoa(len(vs[0]))+" bytes, over the "+strconv.Itoa(maxMessageBytes)+" byte limit.")
		return
	case !utf8.ValidString(vs[0]):
		fail(http.StatusBadRequest, "The message is not valid UTF-8.")
		return
	}
	text := strings.ReplaceAll(vs[0], "\r\n", "\n")
	started, err := u.startTurn(s.ctx, id, text)
	switch {
	case err != nil:
		status, msg := u.publicError(r, err)
		fail(status, msg)
		return
	case !started:
		fail(http.StatusGatewayTimeout, "The engine did not take the message within "+sendStartWait.String()+
			" (is the server overloaded?). Reload the session to see whether it did before sending it again.")
		return
	}
	http.Redirect(w, r, "/ui/chat/"+id+"#end", http.StatusSeeOther)
}

// startTurn sends text to session id and waits until the turn has
// started (the owner's message is recorded), then up to sendWait for its
// end; the turn goes on without this request. It follows the turn by
// reading the session's new events rather than the Send stream, whose
// events a transport may hand over only at the turn's end. started is
// false if the turn did not start within sendStartWait; err is the
// engine's refusal.
func (u *UI) startTurn(ctx context.Context, id, text string) (started bool, err error) {
	last, _, _, err := u.newEvents(ctx, id, 0)
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithTimeout(ctx, sendStartWait)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		st, err := u.sessions.Send(sctx, &contractualv1.SendRequest{SessionId: id, Text: text})
		if err == nil {
			for st.Receive() {
			}
			err = st.Err()
			st.Close()
		}
		done <- rpc.FromConnect(err)
	}()
	var startedAt time.Time
	tick := time.NewTicker(sendPoll)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			_, began, _, perr := u.newEvents(ctx, id, last)
			switch {
			case perr != nil:
				return false, perr
			case began:
				return true, nil
			case err != nil && sctx.Err() == nil:
				return false, err
			}
			return false, nil
		case <-tick.C:
		}
		_, began, ended, err := u.newEvents(ctx, id, last)
		switch {
		case err != nil:
			cancel()
			<-done
			return false, err
		case began && startedAt.IsZero():
			startedAt = time.Now()
		}
		if began && (ended || time.Since(startedAt) >= sendWait) {
			cancel() // the turn goes on; the page follows it
			<-done
			return true, nil
		}
	}
}

// newEvents reads session id's events after seq after: the last one's
// seq, whether the owner's message is among them (a turn started), and
// whether a turn's end is.
func (u *UI) newEvents(ctx context.Context, id string, after int64) (last int64, began, ended bool, err error) {
	st, err := u.sessions.WatchSession(ctx, &contractualv1.WatchSessionRequest{SessionId: id, AfterSeq: after})
	if err != nil {
		return 0, false, false, rpc.FromConnect(err)
	}
	defer st.Close()
	last = after
	for st.Receive() {
		ev := st.Msg().GetEvent()
		last = max(last, ev.GetSeq())
		switch ev.GetKind() {
		case contractualv1.SessionEventKind_SESSION_EVENT_KIND_USER:
			began = true
		case contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_END, contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED:
			ended = true
		}
	}
	return last, began, ended, rpc.FromConnect(st.Err())
}

// keepText is the message to show again in a form that came back, if it
// is text of a sensible size.
func keepText(vs []string) string {
	if len(vs) == 1 && len(vs[0]) <= maxMessageBytes && utf8.ValidString(vs[0]) {
		return vs[0]
	}
	return ""
}

// closeSession closes a session: no more turns, a running one stops.
func (u *UI) closeSession(w http.ResponseWriter, r *http.Request, s *session) {
	if u.sessions == nil {
		u.failErr(w, r, s, errs.E(errs.Unimplemented, noChat))
		return
	}
	id := r.PathValue("id")
	if !approvalIDOK(id) {
		u.failErr(w, r, s, badSessionID)
		return
	}
	if _, err := u.sessions.CloseSession(s.ctx, &contractualv1.CloseSessionRequest{Id: id}); err != nil {
		status, msg := u.publicError(r, err)
		u.show(w, r, s, u.sessionPageSpec(), status, msg, nil)
		return
	}
	http.Redirect(w, r, "/ui/chat/"+id+"?done=session-closed", http.StatusSeeOther)
}

// artifact downloads one of a session's artifacts: always as an
// attachment of opaque bytes, never rendered by the browser.
func (u *UI) artifact(w http.ResponseWriter, r *http.Request, s *session) {
	if u.sessions == nil {
		u.failErr(w, r, s, errs.E(errs.Unimplemented, noChat))
		return
	}
	id, digest := r.PathValue("id"), r.PathValue("digest")
	if !approvalIDOK(id) {
		u.failErr(w, r, s, badSessionID)
		return
	}
	if !digestOK(digest) {
		u.failErr(w, r, s, errs.E(errs.Invalid, `an artifact is "sha256:" followed by 64 lowercase hex digits`))
		return
	}
	resp, err := u.sessions.GetArtifact(s.ctx, &contractualv1.GetArtifactRequest{SessionId: id, Digest: digest})
	if err != nil {
		u.failErr(w, r, s, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="`+strings.TrimPrefix(digest, "sha256:")[:16]+`.bin"`)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(resp.GetContent())))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(resp.GetContent())
	}
}
