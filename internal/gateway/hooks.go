package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/internal/pairing"
	"github.com/contractual/contractual/internal/rpc"
)

// hooksPrefix is the path of webhook deliveries: POST /hooks/<job id>.
const hooksPrefix = "/hooks/"

// Webhook headers (see package scheduler for the scheme).
const (
	headerTimestamp = "Contractual-Timestamp"
	headerDelivery  = "Contractual-Delivery"
	headerSignature = "Contractual-Signature"
)

// hooks passes webhook deliveries to the scheduler. A delivery carries no
// device credential: the scheduler checks its signature. Until then it is
// bounded like any unauthenticated request (a slot, a body cap, a short
// read deadline), and each source is rate limited.
type hooks struct {
	scheduler contractualv1connect.SchedulerInternalServiceClient
	limit     *windowLimit
}

// serveHook serves a webhook delivery for job.
func (g *gate) serveHook(w http.ResponseWriter, r *http.Request, job string) {
	switch {
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		g.refuse(w, r, errs.E(errs.Invalid, "webhook deliveries are POSTed"))
		return
	case g.hooks.scheduler == nil:
		g.refuse(w, r, errs.E(errs.Unimplemented, "this gateway takes no webhooks: it has no scheduler"))
		return
	case compressed(r.Header):
		g.refuse(w, r, errs.E(errs.Invalid, "compressed webhook bodies are refused: send the body uncompressed"))
		return
	case !g.hooks.limit.allow(pairing.SourceFrom(r.Context()), time.Now()):
		g.refuse(w, r, errs.E(errs.ResourceExhausted, "too many webhook deliveries from %s; try again in a minute", pairing.SourceFrom(r.Context())))
		return
	}
	select {
	case g.slots <- struct{}{}:
		defer func() { <-g.slots }()
	default:
		g.refuse(w, r, errs.E(errs.ResourceExhausted, "too many unauthenticated requests in progress; try again later"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.limits.WebhookBytes))
	if err != nil {
		if mb := (*http.MaxBytesError)(nil); errors.As(err, &mb) {
			g.refuse(w, r, errs.E(errs.Invalid, "the webhook body is over the %d byte limit", g.limits.WebhookBytes))
		} else {
			g.refuse(w, r, errs.Wrap(errs.Invalid, err, "reading the webhook body"))
		}
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.limits.WriteTimeout)
	defer cancel()
	resp, err := g.hooks.scheduler.Deliver(ctx, &contractualv1.DeliverRequest{
		JobId: job, Timestamp: r.Header.Get(headerTimestamp), DeliveryId: r.Header.Get(headerDelivery),
		Signature: r.Header.Get(headerSignature), Body: body, Source: pairing.SourceFrom(r.Context()),
	})
	if err != nil {
		if werr := g.errw.Write(w, r, rpc.ToConnect(err, g.log)); werr != nil {
			g.log.Debug("writing a refusal", "err", werr)
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]string{"run_id": resp.GetRunId()})
}

// hookJob returns the job id a webhook path names.
func hookJob(path string) (string, bool) {
	job, ok := strings.CutPrefix(path, hooksPrefix)
	return job, ok && job != "" && !strings.Contains(job, "/")
}

// limitKeys bounds the keys a windowLimit tracks: past it, new keys share
// one.
const limitKeys = 4096

// windowLimit allows max events per key in each fixed window of time.
type windowLimit struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	start  time.Time
	counts map[string]int
}

func newWindowLimit(max int, window time.Duration) *windowLimit {
	return &windowLimit{max: max, window: window, counts: map[string]int{}}
}

// allow counts an event of key at now and reports whether it is within
// the limit.
func (l *windowLimit) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.window || now.Before(l.start) {
		l.start = now
		clear(l.counts)
	}
	if _, ok := l.counts[key]; !ok && len(l.counts) >= limitKeys {
		key = "" // the overflow shares one count
	}
	l.counts[key]++
	return l.counts[key] <= l.max
}
