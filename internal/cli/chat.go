package cli

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/rpc"
)

// chatUsage is the chat command's usage line.
const chatUsage = "chat [--session ID] [--tools a.b,c.d] [--max-calls N] [--max-tokens N] [--max-time D] [--title T] [message] | chat list | tools | show <ID> | close <ID> [--all | --page TOKEN] [--page-size N] [--json] [--server URL]"

// chatSummary is the chat command's one-line summary.
const chatSummary = "chat with the engine: its model proposes tool calls, policy decides them for the session, high-risk ones wait for your approval (no message: one turn per line of stdin)"

// Sizes of what chat prints and reads.
const (
	maxLineBytes   = 32 << 10 // a message: the engine's limit
	shownInput     = 300      // a proposal's input, in characters
	shownResult    = 300      // a result, in characters
	chatListTitles = 50       // a title in the list, in characters
)

// chatCmd opens sessions, sends messages (one, or one per line of stdin),
// lists sessions and shows or closes one.
func chatCmd(ctx context.Context, env *Env, args []string) error {
	var cf connectFlags
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	cf.register(fs, env)
	sessionID := fs.String("session", "", "continue this session instead of opening one")
	tools := fs.String("tools", "", "the tools the model may propose, comma-separated <contract>.<export> (default: every approved tool)")
	maxCalls := fs.Int("max-calls", 0, "the session's budget of tool calls (0: the engine's default)")
	maxTokens := fs.Int64("max-tokens", 0, "the session's budget of tokens (0: the engine's default)")
	maxTime := fs.Duration("max-time", 0, "the session's budget of time spent in turns, e.g. 10m (0: the engine's default)")
	title := fs.String("title", "", "the new session's title (default: the first message's beginning)")
	var lf listFlags
	lf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON: one event a line for a turn; the response for list and show")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	tok, err := cf.token(env)
	if err != nil {
		return err
	}
	c := contractualv1connect.NewSessionServiceClient(env.httpClient(), cf.server, connect.WithInterceptors(bearer(tok)))
	ch := &chat{env: env, c: c, server: strings.TrimRight(cf.server, "/"), json: *asJSON}
	// A subcommand is a whole argument; a message that happens to be one
	// of these words is sent as --session's, or quoted with more words.
	if len(pos) > 0 {
		switch pos[0] {
		case "list":
			if len(pos) != 1 {
				return usagef("chat list takes no argument")
			}
			return ch.list(ctx, &lf)
		case "tools":
			if len(pos) != 1 {
				return usagef("chat tools takes no argument")
			}
			return ch.tools(ctx)
		case "show", "close":
			if len(pos) != 2 {
				return usagef("want one session id")
			}
			if pos[0] == "show" {
				return ch.show(ctx, pos[1])
			}
			return ch.close(ctx, pos[1])
		}
	}
	open := &contractualv1.OpenSessionRequest{Title: *title, Budget: &contractualv1.SessionBudget{ToolCalls: int32(*maxCalls), Tokens: *maxTokens}}
	switch {
	case *maxCalls < 0 || *maxCalls > 1<<31-1, *maxTokens < 0, *maxTime < 0:
		return usagef("a budget is a non-negative number")
	case *sessionID != "" && (*tools != "" || *maxCalls != 0 || *maxTokens != 0 || *maxTime != 0 || *title != ""):
		return usagef("--tools, budgets and --title are for a new session, not with --session")
	}
	if *maxTime > 0 {
		open.Budget.WallTime = durationpb.New(*maxTime)
	}
	for t := range strings.SplitSeq(*tools, ",") {
		if t = strings.TrimSpace(t); t != "" {
			open.Tools = append(open.Tools, t)
		}
	}
	ch.session = *sessionID
	if len(pos) > 0 {
		return ch.turn(ctx, open, strings.Join(pos, " "))
	}
	return ch.repl(ctx, open)
}

// chat is one run of the chat command.
type chat struct {
	env     *Env
	c       contractualv1connect.SessionServiceClient
	server  string
	json    bool
	session string // the session's id, once opened
}

// turn sends text to the session (opening it first if need be) and prints
// the turn's events; a failed turn is an error already reported.
func (ch *chat) turn(ctx context.Context, open *contractualv1.OpenSessionRequest, text string) error {
	if ch.session == "" {
		resp, err := ch.c.OpenSession(ctx, open)
		if err != nil {
			return err
		}
		ch.session = resp.GetSession().GetId()
	}
	failed, err := ch.send(ctx, text)
	if err != nil {
		return err
	}
	fmt.Fprintf(ch.env.Stderr, "session %s: continue with contractual chat --session %s [message]\n", ch.session, ch.session)
	if failed {
		return errReported
	}
	return nil
}

// repl reads one message a line from stdin, until EOF, and runs a turn for
// each. A failed turn is reported and the next line read; the command then
// exits 1.
func (ch *chat) repl(ctx context.Context, open *contractualv1.OpenSessionRequest) error {
	in := bufio.NewScanner(ch.env.Stdin)
	in.Buffer(make([]byte, 64<<10), maxLineBytes+1)
	prompt := isTerminal(ch.env.Stdin)
	anyFailed := false
	for {
		if prompt {
			fmt.Fprint(ch.env.Stderr, "> ")
		}
		if !in.Scan() {
			break
		}
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		if ch.session == "" {
			resp, err := ch.c.OpenSession(ctx, open)
			if err != nil {
				return err
			}
			ch.session = resp.GetSession().GetId()
		}
		failed, err := ch.send(ctx, line)
		if err != nil {
			return err
		}
		anyFailed = anyFailed || failed
	}
	if err := in.Err(); err != nil {
		return errs.Wrap(errs.Invalid, err, "reading stdin (a message is at most %d bytes)", maxLineBytes)
	}
	if ch.session != "" {
		fmt.Fprintf(ch.env.Stderr, "session %s: continue with contractual chat --session %s [message]\n", ch.session, ch.session)
	}
	if anyFailed {
		return errReported
	}
	return nil
}

// isTerminal reports whether r is a terminal (then the REPL prompts).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// send sends one message and prints the turn's events as the Send stream
// brings them, until the turn's end. If the stream is cut first (the
// gateway bounds a request's time, and a turn waiting for an approval may
// take longer), it follows the rest of the turn with WatchSession. It
// reports whether the turn failed.
func (ch *chat) send(ctx context.Context, text string) (failed bool, err error) {
	st, err := ch.c.Send(ctx, &contractualv1.SendRequest{SessionId: ch.session, Text: text})
	if err != nil {
		return false, rpc.FromConnect(err)
	}
	last, end, err := ch.read(st.Receive, func() *contractualv1.SessionEvent { return st.Msg().GetEvent() }, st.Err, 0)
	st.Close()
	switch {
	case end != nil:
		return isFailed(end), nil
	case last == 0:
		// Refused before the turn began (closed, busy, a bad message).
		if err == nil {
			err = errs.E(errs.Internal, "the engine took the message but recorded no turn")
		}
		return false, err
	}
	fmt.Fprintf(ch.env.Stderr, "contractual chat: the stream ended before the turn (%v); following the turn\n", err)
	for ctx.Err() == nil {
		w, err := ch.c.WatchSession(ctx, &contractualv1.WatchSessionRequest{SessionId: ch.session, AfterSeq: last, Follow: true})
		if err != nil {
			return false, rpc.FromConnect(err)
		}
		var seen int64
		seen, end, err = ch.read(w.Receive, func() *contractualv1.SessionEvent { return w.Msg().GetEvent() }, w.Err, last)
		w.Close()
		switch {
		case end != nil:
			return isFailed(end), nil
		case err == nil && seen == last:
			return false, errs.E(errs.Internal, "session %s runs no turn and recorded no end of this one", ch.session)
		case err != nil && !errs.Is(err, errs.DeadlineExceeded) && !errs.Is(err, errs.Unavailable):
			return false, err
		case err != nil:
			// Cut again (the gateway's time bound, a restart): follow on,
			// after a pause.
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
		last = seen
	}
	return false, errs.Wrap(errs.Unavailable, ctx.Err(), "stopped following the turn, which goes on without this command; see it with contractual chat show %s", ch.session)
}

// read prints a stream's events after seq after until a turn's end, which
// it returns, with the last seq read and the stream's error.
func (ch *chat) read(next func() bool, msg func() *contractualv1.SessionEvent, streamErr func() error, after int64) (int64, *contractualv1.SessionEvent, error) {
	for next() {
		ev := msg()
		if ev.GetSeq() <= after {
			continue
		}
		after = ev.GetSeq()
		ch.print(ev)
		switch ev.GetKind() {
		case contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_END, contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED:
			return after, ev, nil
		}
	}
	return after, nil, rpc.FromConnect(streamErr())
}

func isFailed(ev *contractualv1.SessionEvent) bool {
	return ev.GetKind() == contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED
}

// print prints one event of a turn: the model's answer as plain text,
// each proposal, decision, wait for approval and result on its own
// line(s), a failure on stderr. With --json, each event is a line of JSON.
func (ch *chat) print(ev *contractualv1.SessionEvent) {
	w := ch.env.Stdout
	if ch.json {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
		if err == nil {
			fmt.Fprintf(w, "%s\n", b)
		}
		if ev.GetKind() == contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED {
			fmt.Fprintf(ch.env.Stderr, "contractual chat: the turn failed: %s\n", flatLine(ev.GetText(), 2000))
		}
		return
	}
	ch.printEvent(w, ev, true)
}

// printEvent prints ev as a transcript line; live is set while a turn
// runs (then a wait for approval says how to decide it, and a failure goes
// to stderr).
func (ch *chat) printEvent(w io.Writer, ev *contractualv1.SessionEvent, live bool) {
	switch ev.GetKind() {
	case contractualv1.SessionEventKind_SESSION_EVENT_KIND_USER:
		if !live {
			fmt.Fprintf(w, "\nyou: %s\n", termText(ev.GetText()))
		}
	case contractualv1.SessionEventKind_SESSION_EVENT_KIND_ANSWER:
		if live {
			fmt.Fprintln(w, termText(ev.GetText()))
		} else {
			fmt.Fprintf(w, "model: %s\n", termText(ev.GetText()))
		}
	case contractualv1.SessionEventKind_SESSION_EVENT_KIND_PROPOSAL:
		fmt.Fprintf(w, "→ %s %s\n", ev.GetTool(), flatLine(ev.GetInput(), shownInput))
	case contractualv1.SessionEventKind_SESSION_EVENT_KIND_DECISION:
		fmt.Fprintf(w, "  %s: %s\n", verdictWord(ev.GetVerdict()), flatLine(ev.GetReason(), 500))
	case contractualv1.SessionEventKind_SESSION_EVENT_KIND_APPROVAL_AWAITED:
		id := ev.GetApprovalId()
		fmt.Fprintf(w, "  waiting for your one-shot approval %s\n", id)
		if live {
			fmt.Fprintf(w, "    review it: %s/ui/approvals/%s\n    or: contractual approvals show %s, then contractual approvals approve %s (or deny)\n", ch.server, id, id, id)
		}
	case contractualv1.SessionEventKind_SESSION_EVENT_KIND_RESULT:
		what := "result"
		if ev.GetError() {
			what = "error"
		}
		fmt.Fprintf(w, "  ← %s: %s", what, flatLine(ev.GetOutput(), shownResult))
		if ev.GetOutputBytes() > int64(shownResult) || ev.GetArtifact() != "" {
			fmt.Fprintf(w, " (%d bytes", ev.GetOutputBytes())
			if a := ev.GetArtifact(); a != "" {
				fmt.Fprintf(w, "; whole: %s/ui/chat/%s/artifacts/%s", ch.server, ch.session, a)
			}
			fmt.Fprint(w, ")")
		}
		fmt.Fprintln(w)
	case contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_FAILED:
		if live {
			fmt.Fprintf(ch.env.Stderr, "contractual chat: the turn failed: %s\n", flatLine(ev.GetText(), 2000))
		} else {
			fmt.Fprintf(w, "turn failed: %s\n", flatLine(ev.GetText(), 2000))
		}
	case contractualv1.SessionEventKind_SESSION_EVENT_KIND_TURN_END:
		if !live {
			u := ev.GetUsage()
			fmt.Fprintf(w, "(turn ended: %d tool calls, %d tokens so far)\n", u.GetToolCalls(), u.GetPromptTokens()+u.GetCompletionTokens())
		}
	}
}

// verdictWord names a decision: allowed, denied or held (for the owner's
// approval).
func verdictWord(v contractualv1.Verdict) string {
	switch v {
	case contractualv1.Verdict_VERDICT_ALLOW:
		return "allowed"
	case contractualv1.Verdict_VERDICT_APPROVAL_REQUIRED:
		return "held"
	}
	return "denied"
}

// flatLine puts s on one line (control characters, line breaks included,
// shown escaped: the model's and the tools' text cannot move the
// terminal's cursor) and clips it to n characters.
func flatLine(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(" ")
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return clipText(b.String(), n)
}

// termText is the model's text for a terminal: its lines as they are,
// every other control character (an escape sequence's ESC above all)
// shown escaped, so that untrusted text cannot drive the terminal.
func termText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// list lists this device's sessions.
func (ch *chat) list(ctx context.Context, lf *listFlags) error {
	page := func(tok string) (*contractualv1.ListSessionsResponse, error) {
		return ch.c.ListSessions(ctx, &contractualv1.ListSessionsRequest{PageSize: lf.size(), PageToken: tok})
	}
	if ch.json {
		all := &contractualv1.ListSessionsResponse{}
		next, err := lf.each(func(tok string) (string, error) {
			resp, err := page(tok)
			all.Sessions = append(all.Sessions, resp.GetSessions()...)
			return resp.GetNextPageToken(), err
		})
		if err != nil {
			return err
		}
		all.NextPageToken = next
		return printJSON(ch.env, all)
	}
	return lf.table(ch.env, "ID\tSTATE\tTURNS\tTOOL CALLS\tUPDATED\tTITLE", func(w io.Writer, tok string) (string, error) {
		resp, err := page(tok)
		for _, s := range resp.GetSessions() {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", s.GetId(), sessionStateName(s.GetState()), s.GetUsage().GetTurns(),
				s.GetUsage().GetToolCalls(), when(s.GetUpdatedAt()), flatLine(s.GetTitle(), chatListTitles))
		}
		return resp.GetNextPageToken(), err
	})
}

// tools prints the tools a new session may use.
func (ch *chat) tools(ctx context.Context) error {
	resp, err := ch.c.ListTools(ctx, &contractualv1.ListToolsRequest{})
	if err != nil {
		return err
	}
	if ch.json {
		return printJSON(ch.env, resp)
	}
	w := tabwriter.NewWriter(ch.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TOOL\tRISK\tCONTRACT\tDESCRIPTION")
	for _, t := range resp.GetTools() {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.GetName(), strings.ToLower(strings.TrimPrefix(t.GetRisk().String(), "RISK_")),
			t.GetContractDigest(), flatLine(t.GetDescription(), 100))
	}
	return w.Flush()
}

// show prints a session and its whole transcript.
func (ch *chat) show(ctx context.Context, id string) error {
	resp, err := ch.c.GetSession(ctx, &contractualv1.GetSessionRequest{Id: id})
	if err != nil {
		return err
	}
	if ch.json {
		return printJSON(ch.env, resp)
	}
	s := resp.GetSession()
	ch.session = s.GetId()
	w := ch.env.Stdout
	fmt.Fprintf(w, "session %s (%s): %s\n", s.GetId(), s.GetPrincipal(), sessionStateName(s.GetState()))
	if t := s.GetTitle(); t != "" {
		fmt.Fprintf(w, "  title      %s\n", flatLine(t, 200))
	}
	b, u := s.GetBudget(), s.GetUsage()
	fmt.Fprintf(w, "  model      %s\n  tools      %s\n  opened     %s\n", s.GetModel(), strings.Join(s.GetTools(), ", "), when(s.GetCreatedAt()))
	fmt.Fprintf(w, "  tool calls %d of %d\n  tokens     %d of %d\n  wall time  %s of %s\n  turns      %d\n",
		u.GetToolCalls(), b.GetToolCalls(), u.GetPromptTokens()+u.GetCompletionTokens(), b.GetTokens(),
		u.GetWallTime().AsDuration().Round(time.Second), b.GetWallTime().AsDuration(), u.GetTurns())
	for _, ev := range resp.GetEvents() {
		ch.printEvent(w, ev, false)
	}
	return nil
}

// close closes a session.
func (ch *chat) close(ctx context.Context, id string) error {
	resp, err := ch.c.CloseSession(ctx, &contractualv1.CloseSessionRequest{Id: id})
	if err != nil {
		return err
	}
	if ch.json {
		return printJSON(ch.env, resp)
	}
	fmt.Fprintf(ch.env.Stdout, "session %s: closed\n", resp.GetSession().GetId())
	return nil
}

// sessionStateName is a session state as a word.
func sessionStateName(s contractualv1.SessionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SESSION_STATE_"))
}
