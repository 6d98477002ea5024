package job

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/contractual/contractual/contracts/contract"
	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// Card is what a job may do, in words: the permissions card the owner
// approves (the reusable contract). The Control UI and the CLI both build
// it here, so that they never describe a job differently.
type Card struct {
	Name, Description string
	// When says when the job runs, e.g. `on the schedule "0 2 * * *",
	// Europe/Berlin time`.
	When string
	// Steps are the calls of one run, in order.
	Steps []CardStep
	// Budgets are the job's budgets, each in words.
	Budgets []KeyValue
	// Misfire and Retry say what happens to missed and failed runs.
	Misfire, Retry string
}

// CardStep is one step of a card: a tool step (Tool, Contract, Bounds) or
// an agent step (Agent).
type CardStep struct {
	ID, Tool, Contract string
	// Bounds are the tool's input bounds, one line each:
	// "/owner: matches ^[a-z]+$".
	Bounds []string
	// Agent is set for an agent step.
	Agent *CardAgent
}

// CardAgent is an agent step of a card.
type CardAgent struct {
	// Prompt is the owner's instruction to the model.
	Prompt string
	// Tools are the tools the model may propose, each with its pin and
	// bounds (CardStep's Tool, Contract and Bounds).
	Tools []CardStep
	// MaxModelRequests bounds the step's model requests.
	MaxModelRequests uint32
}

// KeyValue is one line of a card's table (the contract card's).
type KeyValue = contract.KeyValue

// NewCard describes j, a validated and normalized job.
func NewCard(j *contractualv1.Job) Card {
	card := Card{Name: j.GetName(), Description: j.GetDescription(), When: whenWords(j.GetTrigger())}
	bounds := make(map[string][]string)
	for _, tb := range j.GetBounds() {
		for _, in := range tb.GetInputs() {
			bounds[tb.GetTool()] = append(bounds[tb.GetTool()], pointerWords(in.GetPointer())+": "+boundText(in))
		}
	}
	for _, s := range j.GetSteps() {
		if a := s.GetAgent(); a != nil {
			ca := &CardAgent{Prompt: a.GetPrompt(), MaxModelRequests: a.GetMaxModelRequests()}
			for _, t := range a.GetTools() {
				ca.Tools = append(ca.Tools, CardStep{ID: s.GetId(), Tool: t.GetTool(), Contract: t.GetContract(), Bounds: bounds[t.GetTool()]})
			}
			card.Steps = append(card.Steps, CardStep{ID: s.GetId(), Agent: ca})
			continue
		}
		card.Steps = append(card.Steps, CardStep{ID: s.GetId(), Tool: s.GetTool(), Contract: s.GetContract(), Bounds: bounds[s.GetTool()]})
	}
	b := j.GetBudgets()
	n := func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
	card.Budgets = []KeyValue{
		{Key: "Tool calls per run", Value: n(b.GetToolCallsPerRun())},
		{Key: "Run time", Value: n(b.GetRunTimeSeconds()) + " s"},
		{Key: "HTTP requests per run", Value: n(b.GetEgressRequests())},
		{Key: "HTTP bytes per run", Value: contract.Bytes(b.GetEgressBytes())},
		{Key: "Output per run", Value: contract.Bytes(b.GetOutputBytes())},
		{Key: "Runs per day", Value: n(b.GetRunsPerDay())},
	}
	card.Misfire = "missed runs are skipped"
	if m := j.GetMisfire(); m.GetPolicy() == contractualv1.MisfirePolicy_MISFIRE_POLICY_CATCH_UP {
		card.Misfire = fmt.Sprintf("up to %d missed runs are caught up", m.GetMaxCatchUp())
		if m.GetMaxCatchUp() == 1 {
			card.Misfire = "the last missed run is caught up"
		}
	}
	card.Retry = "a failed run is not retried"
	if r := j.GetRetry(); r.GetAttempts() > 0 {
		card.Retry = fmt.Sprintf("a failed run is retried up to %d times, %d s apart at first, doubling", r.GetAttempts(), r.GetBackoffSeconds())
	}
	return card
}

// whenWords says when a trigger fires.
func whenWords(t *contractualv1.Trigger) string {
	switch {
	case t.GetCron() != nil:
		return fmt.Sprintf("on the schedule %q, %s time", t.GetCron().GetExpression(), t.GetCron().GetTimeZone())
	case t.GetOnce() != nil:
		return "once, at " + t.GetOnce().GetAt()
	case t.GetWebhook() != nil:
		w := t.GetWebhook()
		return fmt.Sprintf("on each POST to its webhook signed with the secret %s (a signature is good for %d s, and only once)", w.GetSecret(), w.GetReplayWindowSeconds())
	}
	return "never"
}

// pointerWords names the place a JSON pointer points to.
func pointerWords(p string) string {
	if p == "" {
		return "the whole input"
	}
	return p
}

// boundWords lists what a bound requires, in words.
func boundWords(in *contractualv1.InputBound) []string {
	var w []string
	if vs := allowedSet(in); len(vs) > 0 {
		w = append(w, "one of "+strings.Join(vs, ", "))
	}
	if p := in.GetPattern(); p != "" {
		w = append(w, "a string matching "+strconv.Quote(p)+" as a whole")
	}
	if in.Minimum != nil {
		w = append(w, "at least "+floatText(in.GetMinimum()))
	}
	if in.Maximum != nil {
		w = append(w, "at most "+floatText(in.GetMaximum()))
	}
	if in.MaxLength != nil {
		w = append(w, fmt.Sprintf("at most %d characters or elements", in.GetMaxLength()))
	}
	if len(w) == 0 {
		w = append(w, "must be present")
	}
	return w
}

// WriteText writes the card as plain text, as the Control UI lays it out.
func (c Card) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Job %s\n", c.Name)
	if c.Description != "" {
		fmt.Fprintf(&b, "  %s\n", c.Description)
	}
	fmt.Fprintf(&b, "Runs\n  %s\n", c.When)
	b.WriteString("May call, in this order, and nothing else\n")
	for i, s := range c.Steps {
		if a := s.Agent; a != nil {
			fmt.Fprintf(&b, "  %d. an agent step (step %s): the model, told %s, may propose calls of\n", i+1, s.ID, strconv.Quote(a.Prompt))
			for _, t := range a.Tools {
				fmt.Fprintf(&b, "       %s, pinned to contract %s\n", t.Tool, t.Contract)
				writeBounds(&b, "         ", t.Bounds)
			}
			fmt.Fprintf(&b, "       in at most %d model requests; each call is decided like a step's, and anything but allow pauses the job\n", a.MaxModelRequests)
			continue
		}
		fmt.Fprintf(&b, "  %d. %s (step %s), pinned to contract %s\n", i+1, s.Tool, s.ID, s.Contract)
		writeBounds(&b, "       ", s.Bounds)
	}
	b.WriteString("Budgets\n")
	contract.WriteTable(&b, c.Budgets)
	fmt.Fprintf(&b, "If runs are missed or fail\n  %s; %s\n", c.Misfire, c.Retry)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeBounds writes a tool's bound lines, indented.
func writeBounds(b *strings.Builder, indent string, bounds []string) {
	if len(bounds) == 0 {
		b.WriteString(indent + "any input the tool's schema accepts\n")
	}
	for _, l := range bounds {
		b.WriteString(indent + l + "\n")
	}
}
