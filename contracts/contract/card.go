package contract

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
)

// Card is what a contract grants, in words: the permissions card that the
// Control UI shows and `contractual contracts show` prints. Both build it
// here, so that they never describe a contract differently.
type Card struct {
	Tools   []CardTool
	Network []CardRule
	// Secrets lists every secret injection, by rule.
	Secrets []CardSecret
	// Config is the static configuration, sorted by key.
	Config []KeyValue
	Log    bool
	// WASI is nil when WASI is not granted.
	WASI *contractualv1.WasiCapability
	// Limits are the limits of one call, each in words.
	Limits []KeyValue
}

// CardTool is one tool of a card.
type CardTool struct {
	Export, Description string
	// Risk is "low", "medium" or "high".
	Risk string
	// HighRisk tools need the owner's approval of each call.
	HighRisk bool
	// Input says what the tool takes: "a JSON object", "text" or "bytes".
	Input string
}

// CardRule is one egress rule of a card.
type CardRule struct {
	Scheme, Host, Port, PathPrefix string
	Methods                        []string
	// Secrets are the rule's injections: "NAME → Header: format".
	Secrets []string
}

// Origin is the rule's scheme, host, port and path prefix as one URL.
func (r CardRule) Origin() string { return r.Scheme + "://" + r.Host + ":" + r.Port + r.PathPrefix }

// CardSecret is one secret injection of a card.
type CardSecret struct {
	// Name is the secret's name; Where is "Header: format"; Rule is the
	// origin of the rule whose requests carry it.
	Name, Where, Rule string
}

// KeyValue is one line of a card's table.
type KeyValue struct{ Key, Value string }

// WriteTable writes rows to b, indented, one a line, with the values
// aligned: the table of a card (a contract's limits, a job's budgets).
func WriteTable(b *strings.Builder, rows []KeyValue) {
	width := 0
	for _, kv := range rows {
		width = max(width, len(kv.Key))
	}
	for _, kv := range rows {
		fmt.Fprintf(b, "  %-*s  %s\n", width, kv.Key, kv.Value)
	}
}

// NewCard describes c, a validated and normalized contract.
func NewCard(c *contractualv1.Contract) Card {
	var card Card
	for _, t := range c.GetTools() {
		card.Tools = append(card.Tools, CardTool{
			Export: t.GetExport(), Description: t.GetDescription(), Risk: riskName(t.GetRisk()),
			HighRisk: t.GetRisk() == contractualv1.Risk_RISK_HIGH, Input: inputWords(t.GetInputFormat()),
		})
	}
	caps := c.GetCapabilities()
	for _, rule := range caps.GetHttp() {
		row := CardRule{
			Scheme: rule.GetScheme(), Host: rule.GetHost(), Port: strconv.FormatUint(uint64(rule.GetPort()), 10),
			PathPrefix: rule.GetPathPrefix(), Methods: rule.GetMethods(),
		}
		if rule.GetPort() == 0 {
			row.Port = strconv.FormatUint(uint64(defaultPort(rule.GetScheme())), 10)
		}
		if row.PathPrefix == "" {
			row.PathPrefix = "/"
		}
		for _, sec := range rule.GetSecrets() {
			where := sec.GetHeader() + ": " + injectedFormat(sec.GetFormat())
			row.Secrets = append(row.Secrets, sec.GetName()+" → "+where)
			card.Secrets = append(card.Secrets, CardSecret{Name: sec.GetName(), Where: where, Rule: row.Origin()})
		}
		card.Network = append(card.Network, row)
	}
	cfg := caps.GetConfig()
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		card.Config = append(card.Config, KeyValue{k, cfg[k]})
	}
	card.Log = caps.GetLog() != nil
	card.WASI = caps.GetWasi()
	card.Limits = limitWords(c.GetLimits())
	return card
}

// inputWords says what a tool of input format f takes.
func inputWords(f contractualv1.InputFormat) string {
	switch f {
	case contractualv1.InputFormat_INPUT_FORMAT_STRING:
		return "text"
	case contractualv1.InputFormat_INPUT_FORMAT_BYTES:
		return "bytes"
	}
	return "a JSON object"
}

// injectedFormat shows an injection's format with the secret as {secret}.
func injectedFormat(f string) string {
	if f == "" {
		f = "{{secret}}"
	}
	return strings.ReplaceAll(f, "{{secret}}", "{secret}")
}

// limitWords lists a contract's limits in words.
func limitWords(l *contractualv1.Limits) []KeyValue {
	n := func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
	return []KeyValue{
		{"Memory", n(l.GetMemoryMib()) + " MiB"},
		{"Timeout", n(l.GetTimeoutMs()) + " ms"},
		{"Output", Bytes(l.GetOutputBytes())},
		{"HTTP requests per call", n(l.GetHttpRequests())},
		{"HTTP response body", Bytes(l.GetHttpResponseBytes())},
		{"Log output per call", Bytes(l.GetLogBytes())},
		{"stdout + stderr per call", Bytes(l.GetStdioBytes())},
		{"Host calls per call", n(l.GetHostCalls())},
	}
}

// Bytes renders a byte count as a card says it: in KiB or MiB when round.
func Bytes(v uint64) string {
	switch {
	case v >= 1<<20 && v%(1<<20) == 0:
		return strconv.FormatUint(v>>20, 10) + " MiB"
	case v >= 1<<10 && v%(1<<10) == 0:
		return strconv.FormatUint(v>>10, 10) + " KiB"
	case v == 1:
		return "1 byte"
	}
	return strconv.FormatUint(v, 10) + " bytes"
}

// WriteText writes the card as plain text, section by section, as the
// Control UI lays it out.
func (c Card) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("Tools\n")
	for _, t := range c.Tools {
		approval := "runs without asking"
		if t.HighRisk {
			approval = "each call needs your approval"
		}
		fmt.Fprintf(&b, "  %s: risk %s (%s); takes %s\n      %s\n", t.Export, t.Risk, approval, t.Input, t.Description)
	}
	b.WriteString("Network\n")
	if len(c.Network) == 0 {
		b.WriteString("  none: no HTTP requests\n")
	}
	for _, r := range c.Network {
		fmt.Fprintf(&b, "  %s %s\n", strings.Join(r.Methods, ", "), r.Origin())
	}
	b.WriteString("Secrets\n")
	if len(c.Secrets) == 0 {
		b.WriteString("  none\n")
	}
	for _, s := range c.Secrets {
		fmt.Fprintf(&b, "  %s → %s, on requests to %s\n", s.Name, s.Where, s.Rule)
	}
	if len(c.Secrets) > 0 {
		b.WriteString("  (names only: the module never sees these values)\n")
	}
	b.WriteString("Configuration\n")
	if len(c.Config) == 0 {
		b.WriteString("  none\n")
	}
	for _, kv := range c.Config {
		fmt.Fprintf(&b, "  %s = %q\n", kv.Key, kv.Value)
	}
	b.WriteString("Host functions\n")
	if c.Log {
		b.WriteString("  log: granted (capped per call, see limits)\n")
	} else {
		b.WriteString("  log: not granted\n")
	}
	if c.WASI != nil {
		fmt.Fprintf(&b, "  WASI: granted (no filesystem, environment or stdin; real clock: %s; secure random: %s)\n",
			yesNo(c.WASI.GetClock()), yesNo(c.WASI.GetRandom()))
	} else {
		b.WriteString("  WASI: not granted\n")
	}
	b.WriteString("Limits per call\n")
	WriteTable(&b, c.Limits)
	_, err := io.WriteString(w, b.String())
	return err
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}
