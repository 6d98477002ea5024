package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/pairing"
)

// agentDevice pairs a device with scope invoke through the API, approved
// by d with `contractual devices approve`, and returns its token.
func agentDevice(t *testing.T, d *device) string {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pc := contractualv1connect.NewPairingServiceClient(http.DefaultClient, d.url)
	begin, err := pc.BeginPairing(context.Background(), &contractualv1.BeginPairingRequest{PublicKey: pub, Name: "agent", Scopes: []string{"invoke"}})
	if err != nil {
		t.Fatal(err)
	}
	d.must("", "devices", "approve", begin.GetCode())
	done, err := pc.CompletePairing(context.Background(), &contractualv1.CompletePairingRequest{
		DeviceId: begin.GetDeviceId(), Nonce: begin.GetNonce(),
		Signature: ed25519.Sign(priv, pairing.SignedMessage(begin.GetDeviceId(), begin.GetNonce())),
	})
	if err != nil {
		t.Fatal(err)
	}
	return done.GetToken()
}

// runAs runs the CLI against url with the device token tok, its stderr
// going to stderr.
func runAs(url, tok string, stderr io.Writer, args ...string) (int, string) {
	var out bytes.Buffer
	env := &Env{
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: stderr,
		Getenv: func(k string) string {
			if k == "CONTRACTUAL_TOKEN" {
				return tok
			}
			return ""
		},
	}
	return Main(context.Background(), append(args, "--server", url), env), out.String()
}

// waitingFor matches the line `invoke --wait` prints while it waits.
var waitingFor = regexp.MustCompile(`waiting for the owner's one-shot approval ([0-9a-f]+) of this exact call .* at (\S+/ui/approvals/[0-9a-f]+)`)

// ran is how a CLI run ended.
type ran struct {
	code        int
	out, errOut string
}

// invokeWaiting starts `contractual invoke --wait` as the agent and
// returns the approval id it waits for, once it says so, and a channel
// with its exit status, stdout and stderr.
func invokeWaiting(t *testing.T, url, tok string, args ...string) (string, <-chan ran) {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan ran, 1)
	go func() {
		code, out := runAs(url, tok, pw, append([]string{"invoke", "--wait"}, args...)...)
		pw.Close()
		done <- ran{code: code, out: out}
	}()
	var errOut bytes.Buffer
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		errOut.WriteString(sc.Text() + "\n")
		if m := waitingFor.FindStringSubmatch(sc.Text()); m != nil {
			if m[2] != url+"/ui/approvals/"+m[1] {
				t.Errorf("approve at %s, want the Control UI page of %s", m[2], m[1])
			}
			result := make(chan ran, 1)
			go func() {
				io.Copy(&errOut, pr)
				r := <-done
				r.errOut = errOut.String()
				result <- r
			}()
			return m[1], result
		}
	}
	r := <-done
	t.Fatalf("invoke --wait ended (exit %d) without waiting: %s%s", r.code, r.out, errOut.String())
	return "", nil
}

// TestInvokeWaitAndApprovals: an agent's `invoke` of a high-risk tool is
// refused, naming the approval; `invoke --wait` says which approval it
// waits for and where to approve it, and prints the output once the owner
// approves it with `contractual approvals approve`, having seen it with
// `approvals list` and `approvals show` (the exact input, who asked, the
// permissions card); the approval is used up; a denied call ends the wait
// with the denial.
func TestInvokeWaitAndApprovals(t *testing.T) {
	d, _, _ := pairedDevice(t)
	src, err := os.ReadFile(tool("greeter", "contract.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ct := filepath.Join(t.TempDir(), "contract.yaml")
	if err := os.WriteFile(ct, bytes.Replace(src, []byte("risk: low"), []byte("risk: high"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := d.must("", "publish", tool("greeter", "greeter.wasm"), "--contract", ct)
	digest := regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(out)
	d.must("", "contracts", "approve", digest)
	agent := agentDevice(t, d)

	var errOut bytes.Buffer
	if code, _ := runAs(d.url, agent, &errOut, "invoke", "greeter.greet", "--input", `{"name": "cli"}`); code != exitFailure ||
		!strings.Contains(errOut.String(), "/ui/approvals/") || !strings.Contains(errOut.String(), "--wait") {
		t.Fatalf("invoke without approval: exit %d, %s", code, errOut.String())
	}

	id, result := invokeWaiting(t, d.url, agent, "greeter.greet", "--input", `{"name": "cli"}`)
	list, _ := d.must("", "approvals", "list")
	if !strings.Contains(list, id) || !strings.Contains(list, "greeter.greet") || !strings.Contains(list, `{"name":"cli"}`) {
		t.Fatalf("approvals list:\n%s", list)
	}
	show, _ := d.must("", "approvals", "show", id)
	for _, want := range []string{"pending", "greeter.greet", `"name": "cli"`, `device:`, `("agent")`, digest, "greeting"} {
		if !strings.Contains(show, want) {
			t.Errorf("approvals show lacks %q:\n%s", want, show)
		}
	}
	if out, _ := d.must("", "approvals", "approve", id, "--reason", "fine"); !strings.Contains(out, "approved") {
		t.Fatalf("approve: %s", out)
	}
	if r := <-result; r.code != exitOK || strings.TrimSpace(r.out) != `{"message":"Hello, cli!"}` {
		t.Fatalf("invoke --wait after approval: exit %d, %q, %s", r.code, r.out, r.errOut)
	}
	if used, _ := d.must("", "approvals", "list", "--state", "used"); !strings.Contains(used, id) {
		t.Fatalf("used approvals:\n%s", used)
	}

	// Used up: the same call waits for a new approval; denied, it ends.
	next, result := invokeWaiting(t, d.url, agent, "greeter.greet", "--input", `{"name": "cli"}`)
	if next == id {
		t.Fatal("the same call waits for the used approval")
	}
	d.must("", "approvals", "deny", next, "--reason", "enough")
	if r := <-result; r.code != exitFailure || !strings.Contains(r.errOut, "denied") || !strings.Contains(r.errOut, "enough") {
		t.Fatalf("invoke --wait after denial: exit %d, %q, %s", r.code, r.out, r.errOut)
	}
	if code, _, errOut := d.run("", "approvals", "approve", next); code != exitFailure || !strings.Contains(errOut, "denied") {
		t.Fatalf("approving a denied approval: exit %d, %s", code, errOut)
	}
}
