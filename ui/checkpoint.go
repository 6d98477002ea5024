package ui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// checkpointPath is where a page's script has the audit log checked
// against the newest signed checkpoint this browser has seen.
const checkpointPath = "/ui/audit/checkpoint"

// checkpointAnswer is checkpointPath's answer.
type checkpointAnswer struct {
	// OK is false when the log no longer extends the checkpoint the browser
	// saw: tampering.
	OK      bool   `json:"ok"`
	Problem string `json:"problem,omitempty"`
	// Pruned, with OK, says that the events after the checkpoint the
	// browser saw were pruned (exported, then dropped from the live log)
	// and where they are; the log extends the anchor it starts at.
	Pruned string `json:"pruned,omitempty"`
	// Checkpoint is the newest signed checkpoint (absent while the log has
	// none), for the browser to remember when OK.
	Checkpoint json.RawMessage `json:"checkpoint,omitempty"`
}

// auditCheckpoint makes the browser a device that remembers the audit
// log's newest signed checkpoint: POST form fields csrf and seen (the
// checkpoint the browser remembers, as this endpoint gave it; empty at
// first) → {"ok", "problem", "checkpoint"}. The audit service checks that
// the log extends seen (audit.Extends over its own rows). Tampering is a
// finding, answered 200 with ok false, not a failed request; the script then
// keeps what it remembers.
func (u *UI) auditCheckpoint(w http.ResponseWriter, r *http.Request, s *session) {
	var seen *contractualv1.Checkpoint
	if v := r.PostForm.Get("seen"); v != "" {
		seen = new(contractualv1.Checkpoint)
		if err := protojson.Unmarshal([]byte(v), seen); err != nil {
			writeJSONError(w, http.StatusBadRequest, "seen is not a checkpoint: "+err.Error())
			return
		}
	}
	resp, err := u.audit.CheckConsistency(s.ctx, &contractualv1.CheckConsistencyRequest{Seen: seen})
	var pruned string
	if p := resp.GetPruned(); err == nil && p != nil {
		// What the browser saw is gone from the live log: check the log
		// from where it now starts, and say so.
		pruned = prunedNote(resp.GetProblem(), p)
		resp, err = u.audit.CheckConsistency(s.ctx, &contractualv1.CheckConsistencyRequest{Seen: p.GetAnchor()})
	}
	if err != nil {
		u.jsonFail(w, r, err)
		return
	}
	ans := checkpointAnswer{OK: resp.GetOk(), Problem: resp.GetProblem()}
	if ans.OK {
		ans.Pruned = pruned
	}
	if c := resp.GetLatest(); c != nil {
		if ans.Checkpoint, err = (protojson.MarshalOptions{UseProtoNames: true}).Marshal(c); err != nil {
			u.jsonFail(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, ans)
}

// prunedNote describes a pruned range and the exports that hold it.
func prunedNote(problem string, p *contractualv1.Pruned) string {
	var b strings.Builder
	b.WriteString(problem)
	for i, x := range p.GetExports() {
		if i == 0 {
			b.WriteString("; exported as ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (checkpoints %d..%d, %s)", x.GetName(), x.GetStartSeq(), x.GetSealSeq(), x.GetSha256())
	}
	return b.String()
}
