package ui

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/secret"
)

// view is what every page template gets.
type view struct {
	Title string
	// Nav names the active nav entry.
	Nav     string
	Session *session
	Flash   string
	Error   string
	// Keep holds non-secret form fields to show again after an error.
	Keep map[string]string
	Data any
	// Refresh reloads the page every 2 seconds (a chat session whose
	// turn runs).
	Refresh bool
}

// pageNames are the page templates; each is parsed with layout.html.
var pageNames = []string{"error", "pair", "overview", "contracts", "contract", "approvals", "approval", "devices", "secrets", "runs", "jobs", "job", "run", "chat", "session"}

// funcs are the template helpers.
var funcs = template.FuncMap{
	"pathEscape": url.PathEscape,
	"short":      shortDigest,
	"when":       when,
	"iso":        iso,
	"join":       func(s []string) string { return strings.Join(s, ",") },
	"kind":       kindName,
	"node":       nodeName,
	"jobState":   jobStateName,
}

// nodeName names a device's tailnet node as the devices page shows it:
// its MagicDNS name (or address, or id) and its user or tags.
func nodeName(p *contractualv1.TailnetPeer) string {
	name := cmp.Or(p.GetNodeName(), p.GetAddress(), p.GetNodeId())
	if who := cmp.Or(p.GetUser(), strings.Join(p.GetTags(), ", ")); who != "" {
		return name + " (" + who + ")"
	}
	return name
}

// kindName names a device kind as the devices page shows it.
func kindName(k contractualv1.DeviceKind) string {
	if k == contractualv1.DeviceKind_DEVICE_KIND_BROWSER {
		return "browser"
	}
	return "client"
}

// parsePages parses every page with the layout.
func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", "templates/jobparts.html")
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "ui: parsing the layout")
	}
	pages := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := base.Clone()
		if err == nil {
			t, err = t.ParseFS(templateFS, "templates/"+name+".html")
		}
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "ui: parsing page %s", name)
		}
		pages[name] = t
	}
	return pages, nil
}

// render executes page name with v and writes it with status. The page is
// rendered in full before anything is written, so a template failure
// gives a clean 500.
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	if v.Flash == "" && v.Error == "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		v.Flash = flash(r.URL.Query())
	}
	var buf bytes.Buffer
	if err := u.pages[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		u.log.Error("ui: rendering a page", "page", name, "err", err)
		buf.Reset()
		buf.WriteString("<!doctype html><title>Error</title><p id=\"error\">" + template.HTMLEscapeString(internalMessage) + "</p>")
		status = http.StatusInternalServerError
	}
	writeHTML(w, status, &buf)
}

// flashes are the fixed texts a redirect may ask for with ?done=KEY; no
// text from the request is ever shown, only these (and, for secrets, a
// validated name and version).
var flashes = map[string]string{
	"approved":         "Contract approved: its tools may run now.",
	"rejected":         "Contract rejected.",
	"revoked":          "Contract revoked: its tools no longer run.",
	"call-approved":    "Call approved: that exact call may run once, before the approval expires.",
	"call-denied":      "Call denied: that exact call is refused until the denial expires.",
	"request-approved": "Pairing request approved: the device can now finish pairing.",
	"request-rejected": "Pairing request rejected.",
	"device-revoked":   "Device revoked: its token is refused from now on.",
	"job-approved":     "Job approved: it runs on its trigger, within its bounds and budgets.",
	"job-rejected":     "Job version rejected.",
	"job-paused":       "Job paused: no run of it starts and none of its calls is allowed until you resume it.",
	"job-resumed":      "Job resumed: a fresh approval of the job as shown.",
	"job-deleted":      "Job deleted: no run of it starts again. Its audit trail stays.",
	"job-run":          "Run queued: this page shows it as the worker runs it.",
	"session-opened":   "Session opened: its tool calls are decided by policy for the session, and a high-risk one waits for your approval.",
	"session-closed":   "Session closed: no more turns.",
	"paired":           "This browser is paired and signed in.",
	"signed-out":       "Signed out: this browser's device was revoked. Pair it again to sign in.",
	"session-ended":    "Signed out: this browser's device token is no longer valid (was it revoked?). Pair it again to sign in.",
	"session-other-node": "Signed out: this browser's session was paired on another tailnet node (or outside the tailnet), and a session works only where it was paired. " +
		"Pair this browser again here.",
	"session-expired": fmt.Sprintf("Signed out: this browser's session expired (a browser's device token lasts %s without use, and %s after pairing at most). "+
		"Pair it again below: approve its new code on a paired device, or use the setup code if no owner device is left.",
		days(pairing.DefaultBrowserLifetime.Idle), days(pairing.DefaultBrowserLifetime.Max)),
}

// days renders a whole number of days.
func days(d time.Duration) string { return strconv.Itoa(int(d/(24*time.Hour))) + " days" }

// flash returns the message a redirect asked for, or "".
func flash(q url.Values) string {
	key := q.Get("done")
	if msg, ok := flashes[key]; ok {
		return msg
	}
	name := q.Get("name")
	if !secret.ValidName(name) {
		return ""
	}
	switch key {
	case "stored":
		v, err := strconv.ParseUint(q.Get("version"), 10, 32)
		if err != nil || v == 0 {
			return ""
		}
		return "stored " + name + " version " + strconv.FormatUint(v, 10)
	case "deleted":
		return "deleted " + name + " (every version)"
	}
	return ""
}

// shortDigest abbreviates "sha256:<64 hex>" to "sha256:<12 hex>…".
func shortDigest(d string) string {
	if hex, ok := strings.CutPrefix(d, "sha256:"); ok && len(hex) > 12 {
		return "sha256:" + hex[:12] + "…"
	}
	return d
}

// when renders a timestamp in UTC, or "—" if absent.
func when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "—"
	}
	return ts.AsTime().UTC().Format("2006-01-02 15:04:05 UTC")
}

// iso renders a timestamp for a <time datetime> attribute.
func iso(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}
