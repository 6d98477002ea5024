package deploytest_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	contractualv1 "github.com/contractual/contractual/contracts/gen/contractual/v1"
	"github.com/contractual/contractual/contracts/gen/contractual/v1/contractualv1connect"
	"github.com/contractual/contractual/internal/deploytest"
)

// apiToken is the secret the flow stores and the stand-in API wants.
const apiToken = "ghp_deploytest_0123456789abcdef"

// deployment is one compose project of the deployment under test, with
// what the test made around it.
type deployment struct {
	*deploytest.Project
	root    string // the module's root
	dir     string // the test's scratch directory
	url     string // the gateway, published on loopback
	probe   string // the probe image's tag
	cli     string // the contractual CLI, built on the host
	config  string // the CLI's configuration directory (its device token)
	secrets string // the deployment's secrets (CONTRACTUAL_SECRETS)
	socks   string // if set, the SOCKS5 proxy ("user:password@host:port") the CLI and curl reach d.url through
	apiIP   string // the stand-in for api.github.com, on a network of its own
	apiNet  string
	modelIP string // the stand-in for api.openai.com, on the same network
	isolate string // a network the runner must not reach
	textkit string // the approved textkit contract's digest, once the flow has published it
	jobRun  string // a job's run that succeeded, once the jobs have run
}

// TestCompose builds the images, brings the deployment up with `docker
// compose up --wait` and checks it from the host and from containers of
// its own. The project is removed with its volumes at the end, however the
// test ends.
func TestCompose(t *testing.T) {
	deploytest.Require(t)
	d := setUp(t)

	up, err := d.Up(t.Context())
	if err != nil {
		t.Fatalf("compose up: %v", err) // tearDown logs the services' logs
	}
	t.Logf("docker compose up --wait (built images, fresh volumes): %.1fs to all healthy", up.Seconds())

	t.Run("healthy", d.healthy)
	t.Run("hardened", d.hardened)
	t.Run("only the gateway publishes, on loopback", d.published)
	t.Run("networks", d.networks)
	t.Run("volumes mounted only into their owners", d.volumes)
	t.Run("no certificate, no answer", d.noCertificate)
	t.Run("runner cannot reach another network", d.runnerIsolated)
	// The flow pairs the device, and approves the tool, the next ones use.
	if t.Run("flow through the gateway", d.flow) {
		t.Run("jobs through the scheduler and the worker", d.jobs)
		t.Run("agents over MCP through the gateway", d.mcpAgent)
		if t.Run("chat through the engine", d.chat) {
			t.Run("an agent step through the worker and the engine", d.agentStep)
		}
		var acked []string
		t.Run("runner killed mid-traffic", func(t *testing.T) { acked = d.killRunner(t) })
		t.Run("down and up keep everything", func(t *testing.T) { d.downUp(t, acked) })
	}
	t.Run("the CLI image runs a tool", d.cliImage)
}

// setUp makes everything the project needs and registers its removal.
func setUp(t *testing.T) *deployment {
	ctx := t.Context()
	d := newDeployment(t, "deploytest-")
	port := freePort(t)
	d.url = "http://127.0.0.1:" + port
	// The engine's model, through the compose file's default relay
	// (llm.chat) to the stand-in for api.openai.com.
	d.Env = append(d.Env, "CONTRACTUAL_PORT="+port, "CONTRACTUAL_MODEL="+chatModel)

	d.startAPI(t)
	d.Files = []string{filepath.Join(d.root, "docker-compose.yml"), d.override(t)}
	if _, err := d.Compose(ctx, 45*time.Minute, "build"); err != nil {
		t.Fatalf("compose build: %v", err)
	}
	return d
}

// newDeployment makes what every project of the deployment needs: a
// unique name (prefix and random hex), the Go builder and probe images,
// the CLI built on the host, the broker's key-encryption key
// (deploy/secrets.sh) in the test's own secrets directory, and the
// environment that names them; and registers the removal of everything.
func newDeployment(t *testing.T, prefix string) *deployment {
	ctx := t.Context()
	root, err := deploytest.Root()
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{root: root, dir: t.TempDir()}
	name := prefix + hex.EncodeToString(randomBytes(t, 4))
	logf, err := os.Create(filepath.Join(d.dir, "compose.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	d.Project = &deploytest.Project{Name: name, Log: logf}
	// Remove everything the test made, whatever happens next (before the
	// scratch directory and its log go).
	t.Cleanup(func() { d.tearDown(t) })

	goImage, err := deploytest.GoImage(ctx, root)
	if err != nil {
		t.Fatalf("the Go builder image: %v", err)
	}
	d.probe = name + "-probe:latest"
	if err := deploytest.ProbeImage(ctx, root, t.TempDir(), d.probe); err != nil {
		t.Fatalf("the probe image: %v", err)
	}
	d.cli = filepath.Join(d.dir, "contractual")
	if out, err := goCmd(ctx, root, "build", "-o", d.cli, "./cmd/contractual"); err != nil {
		t.Fatalf("building the CLI: %v\n%s", err, out)
	}
	d.config = filepath.Join(d.dir, "config")

	d.secrets = filepath.Join(d.dir, "secrets")
	cmd := exec.CommandContext(ctx, filepath.Join(root, "deploy", "secrets.sh"))
	cmd.Env = append(os.Environ(), "CONTRACTUAL_SECRETS="+d.secrets)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/secrets.sh: %v\n%s", err, out)
	}
	d.Env = []string{
		deploytest.EnvGoImage + "=" + goImage,
		"CONTRACTUAL_TAG=" + name, // the project's own images, removed with it
		"CONTRACTUAL_SECRETS=" + d.secrets,
	}
	return d
}

// tearDown removes the project with its volumes, and the test's own
// containers, networks and probe image.
func (d *deployment) tearDown(t *testing.T) {
	ctx := context.Background()
	if len(d.Files) > 0 {
		if t.Failed() {
			d.dumpLogs(t)
		}
		if err := d.Down(ctx, true); err != nil {
			t.Errorf("compose down -v: %v", err)
		}
	}
	ids, _ := deploytest.Docker(ctx, "ps", "-a", "-q", "--filter", "label=deploytest="+d.Name)
	if ids := strings.Fields(string(ids)); len(ids) > 0 {
		if _, err := deploytest.Docker(ctx, append([]string{"rm", "-f"}, ids...)...); err != nil {
			t.Errorf("removing the test's containers: %v", err)
		}
	}
	for _, n := range []string{d.apiNet, d.isolate} {
		if n != "" {
			if _, err := deploytest.Docker(ctx, "network", "rm", n); err != nil {
				t.Errorf("removing network %s: %v", n, err)
			}
		}
	}
	// The images: the next run makes them again from the build cache.
	out, _ := deploytest.Docker(ctx, "images", "-a", "-q", "--filter", "label=deploytest="+d.Name)
	if ids := slices.Compact(slices.Sorted(slices.Values(strings.Fields(string(out))))); len(ids) > 0 {
		if _, err := deploytest.Docker(ctx, append([]string{"image", "rm", "-f"}, ids...)...); err != nil {
			t.Errorf("removing the test's images: %v", err)
		}
	}
	if d.probe != "" {
		deploytest.Docker(ctx, "image", "rm", d.probe)
	}
}

// dumpLogs logs the end of every service's log and of the compose log.
func (d *deployment) dumpLogs(t *testing.T) {
	out, err := d.Compose(context.Background(), 2*time.Minute, "logs", "--no-color", "--tail", "40")
	t.Logf("service logs (%v):\n%s", err, out)
	b, _ := os.ReadFile(filepath.Join(d.dir, "compose.log"))
	if len(b) > 8192 {
		b = b[len(b)-8192:]
	}
	t.Logf("compose output (end):\n%s", b)
}

// healthy: every long-running service is running and healthy, and
// ca-init has exited 0.
func (d *deployment) healthy(t *testing.T) {
	cs, err := d.Containers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range cs {
		seen[c.Service()] = true
		if c.Service() == "ca-init" {
			if c.State.Status != "exited" || c.State.ExitCode != 0 {
				t.Errorf("ca-init: %s, exit code %d; want exited 0", c.State.Status, c.State.ExitCode)
			}
			continue
		}
		if c.State.Status != "running" || c.Health() != "healthy" {
			t.Errorf("%s: %s, health %q; want running and healthy", c.Service(), c.State.Status, c.Health())
		}
	}
	for _, s := range append(slices.Clone(deploytest.Services), deploytest.Service{Name: "ca-init"}) {
		if !seen[s.Name] {
			t.Errorf("no container for service %s", s.Name)
		}
	}
}

// hardened: each long-running service's main process, read from the host,
// runs as its own non-root user in group 10000, with no capabilities,
// no-new-privileges and the seccomp filter, on a read-only root that even
// the host's root cannot write through; and docker agrees.
func (d *deployment) hardened(t *testing.T) {
	for _, s := range deploytest.Services {
		t.Run(s.Name, func(t *testing.T) {
			c, err := d.Container(t.Context(), s.Name)
			if err != nil {
				t.Fatal(err)
			}
			if c.State.Pid == 0 {
				t.Fatalf("%s is not running (%s)", s.Name, c.State.Status)
			}
			st, err := deploytest.ReadStatus(c.State.Pid)
			if err != nil {
				t.Fatal(err)
			}
			for i, uid := range st.UID {
				if uid != s.UID || uid == 0 {
					t.Errorf("/proc/%d/status Uid[%d] = %d, want %d", c.State.Pid, i, uid, s.UID)
				}
			}
			for i, gid := range st.GID {
				if gid != deploytest.GID {
					t.Errorf("/proc/%d/status Gid[%d] = %d, want %d", c.State.Pid, i, gid, deploytest.GID)
				}
			}
			if st.CapEff != 0 {
				t.Errorf("CapEff = %#x, want 0", st.CapEff)
			}
			if st.NoNewPrivs != 1 {
				t.Errorf("NoNewPrivs = %d, want 1", st.NoNewPrivs)
			}
			if st.Seccomp != 2 {
				t.Errorf("Seccomp = %d, want 2 (filter)", st.Seccomp)
			}

			hc := c.HostConfig
			if !hc.ReadonlyRootfs {
				t.Error("HostConfig.ReadonlyRootfs is false")
			}
			// As root on the host, through the process's root: a write
			// passes every permission check but the read-only mount's.
			probe := fmt.Sprintf("/proc/%d/root/deploytest-write-probe", c.State.Pid)
			err = os.WriteFile(probe, []byte("x"), 0o600)
			if err == nil {
				os.Remove(probe)
			}
			if !errors.Is(err, syscall.EROFS) {
				t.Errorf("writing %s: %v; want %v", probe, err, syscall.EROFS)
			}
			if want := fmt.Sprintf("%d:%d", s.UID, deploytest.GID); c.Config.User != want {
				t.Errorf("Config.User = %q, want %q", c.Config.User, want)
			}
			if !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 || hc.Privileged {
				t.Errorf("CapDrop %v, CapAdd %v, Privileged %v; want [ALL], none, false", hc.CapDrop, hc.CapAdd, hc.Privileged)
			}
			if !slices.Contains(hc.SecurityOpt, "no-new-privileges:true") {
				t.Errorf("SecurityOpt %v lacks no-new-privileges:true", hc.SecurityOpt)
			}
			if hc.Memory <= 0 || hc.PidsLimit == nil || *hc.PidsLimit <= 0 {
				t.Errorf("Memory %d, PidsLimit %v; want both limited", hc.Memory, hc.PidsLimit)
			}
			if hc.RestartPolicy.Name != "unless-stopped" {
				t.Errorf("RestartPolicy %q, want unless-stopped", hc.RestartPolicy.Name)
			}
			if _, ok := hc.Tmpfs["/tmp"]; !ok {
				t.Errorf("no tmpfs at /tmp (%v)", hc.Tmpfs)
			}
		})
	}
	t.Run("ca-init", func(t *testing.T) {
		c, err := d.Container(t.Context(), "ca-init")
		if err != nil {
			t.Fatal(err)
		}
		hc := c.HostConfig
		if !hc.ReadonlyRootfs || !slices.Equal(hc.CapDrop, []string{"ALL"}) || !slices.Contains(hc.SecurityOpt, "no-new-privileges:true") ||
			c.Config.User != "10009:10000" || hc.NetworkMode != "none" {
			t.Errorf("ca-init: ReadonlyRootfs %v, CapDrop %v, SecurityOpt %v, User %q, NetworkMode %q",
				hc.ReadonlyRootfs, hc.CapDrop, hc.SecurityOpt, c.Config.User, hc.NetworkMode)
		}
	})
}

// published: no container of the project publishes a port but the
// gateway, which publishes its API on 127.0.0.1 alone.
func (d *deployment) published(t *testing.T) {
	cs, err := d.Containers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimPrefix(d.url, "http://127.0.0.1:")
	for _, c := range cs {
		var got []string
		for port, bindings := range c.NetworkSettings.Ports {
			for _, b := range bindings {
				got = append(got, fmt.Sprintf("%s:%s->%s", b.HostIP, b.HostPort, port))
			}
		}
		for port, bindings := range c.HostConfig.PortBindings {
			for _, b := range bindings {
				got = append(got, fmt.Sprintf("(config) %s:%s->%s", b.HostIP, b.HostPort, port))
			}
		}
		slices.Sort(got)
		switch c.Service() {
		case "gateway":
			if w := []string{"(config) 127.0.0.1:" + want + "->8080/tcp", "127.0.0.1:" + want + "->8080/tcp"}; !slices.Equal(got, w) {
				t.Errorf("gateway publishes %v, want %v", got, w)
			}
		default:
			if len(got) != 0 {
				t.Errorf("%s publishes %v, want nothing", c.Service(), got)
			}
		}
	}
	resp, err := http.Get(d.url + "/")
	if err != nil {
		t.Fatalf("the gateway on %s: %v", d.url, err)
	}
	resp.Body.Close()
}

// networks: everything is on the internal network, which has no way out
// (the engine too: its model requests leave through the runner's relay);
// the runner alone is also on egress, the gateway on front (the bridge
// its published port needs, without NAT to the outside); ca and ca-init
// have no network.
func (d *deployment) networks(t *testing.T) {
	ctx := t.Context()
	cs, err := d.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"gateway": {"front", "internal"}, "policy": {"internal"}, "runner": {"egress", "internal"},
		"broker": {"internal"}, "audit": {"internal"}, "scheduler": {"internal"}, "worker": {"internal"},
		"engine": {"internal"}, "ca": {"none"}, "ca-init": {"none"},
	}
	for _, c := range cs {
		var got []string
		for n := range c.NetworkSettings.Networks {
			got = append(got, strings.TrimPrefix(n, d.Name+"_"))
		}
		// The test's stand-in API is the runner's one extra network (see override).
		got = slices.DeleteFunc(got, func(n string) bool { return n == d.apiNet })
		slices.Sort(got)
		if !slices.Equal(got, want[c.Service()]) {
			t.Errorf("%s is on networks %v, want %v", c.Service(), got, want[c.Service()])
		}
	}
	var nets []struct {
		Name     string
		Internal bool
		Options  map[string]string
	}
	out, err := deploytest.Docker(ctx, "network", "inspect", d.Name+"_internal", d.Name+"_front", d.Name+"_egress")
	if err == nil {
		err = json.Unmarshal(out, &nets)
	}
	if err != nil || len(nets) != 3 {
		t.Fatalf("docker network inspect: %v (%d networks)", err, len(nets))
	}
	for _, n := range nets {
		internal := n.Name == d.Name+"_internal"
		if n.Internal != internal {
			t.Errorf("network %s: Internal %v, want %v", n.Name, n.Internal, internal)
		}
		if n.Name == d.Name+"_front" && n.Options["com.docker.network.bridge.enable_ip_masquerade"] != "false" {
			t.Errorf("network %s NATs to the outside (options %v)", n.Name, n.Options)
		}
	}
}

// volumes: each store is mounted into its owner alone; each certificate
// volume read-only into its service and writable into ca and ca-init
// only; the root CA's volume into ca-init only; the key-encryption key
// into the broker only.
func (d *deployment) volumes(t *testing.T) {
	cs, err := d.Containers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	type use struct {
		service, dest string
		rw            bool
	}
	got := map[string][]use{}
	for _, c := range cs {
		for _, m := range c.Mounts {
			name := strings.TrimPrefix(m.Name, d.Name+"_")
			if m.Type != "volume" {
				name = m.Type + ":" + m.Destination
			}
			got[name] = append(got[name], use{c.Service(), m.Destination, m.RW})
		}
	}
	want := map[string][]use{
		"gateway-data":   {{"gateway", "/data", true}},
		"policy-data":    {{"policy", "/data", true}},
		"broker-data":    {{"broker", "/data", true}},
		"audit-data":     {{"audit", "/data", true}},
		"scheduler-data": {{"scheduler", "/data", true}},
		"worker-data":    {{"worker", "/data", true}},
		"engine-data":    {{"engine", "/data", true}},
		"runner-cache":   {{"runner", "/cache", true}},
		"ca-root":        {{"ca-init", "/ca/root", true}},
		"ca-issuer":      {{"ca", "/ca/issuer", false}, {"ca-init", "/ca/issuer", true}},
		// Compose mounts a file secret as a read-only bind.
		"bind:/run/secrets/kek": {{"broker", "/run/secrets/kek", false}},
		// The test's own roots for the stand-in API (see override).
		"bind:/run/deploytest/roots.pem": {{"runner", "/run/deploytest/roots.pem", false}},
	}
	for _, s := range []string{"gateway", "engine", "policy", "runner", "broker", "audit", "scheduler", "worker"} {
		want[s+"-certs"] = []use{{"ca", "/certs/" + s, true}, {"ca-init", "/certs/" + s, true}, {s, "/run/certs", false}}
	}
	byService := func(a, b use) int { return strings.Compare(a.service, b.service) }
	for name, uses := range got {
		slices.SortFunc(uses, byService)
		slices.SortFunc(want[name], byService)
		if !slices.Equal(uses, want[name]) {
			t.Errorf("%s is mounted %v, want %v", name, uses, want[name])
		}
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("%s is mounted nowhere", name)
		}
	}
}

// noCertificate: a container on the internal network without a
// certificate reaches each service's mTLS port, which shows its
// certificate and then refuses: no HTTP answer. The gateway's API answers
// it only "unauthenticated"; the ops ports serve no procedure.
func (d *deployment) noCertificate(t *testing.T) {
	const procedure = "/contractual.v1.AuditInternalService/Append"
	mtls := map[string]string{} // URL → the service's SPIFFE ID
	var urls []string
	for _, s := range []string{"engine", "policy", "runner", "broker", "audit", "scheduler", "worker"} {
		u := "https://" + s + ":8443" + procedure
		mtls[u] = "spiffe://contractual.internal/" + s
		urls = append(urls, u)
	}
	ops := map[string]bool{}
	for _, s := range []string{"gateway", "engine", "policy", "runner", "broker", "audit", "scheduler", "worker"} {
		u := "http://" + s + ":9090" + procedure
		ops[u] = true
		urls = append(urls, u)
	}
	gatewayURL := "http://gateway:8080/contractual.v1.AuditService/Tail"
	urls = append(urls, gatewayURL)
	for _, r := range d.dial(t, []string{"--network", d.Name + "_internal"}, urls...) {
		switch {
		case mtls[r.URL] != "":
			if r.Peer != mtls[r.URL] || r.Status != 0 || r.Error == "" {
				t.Errorf("%s without a certificate: peer %q, answer %d %q (%s); want %s's certificate, then no answer",
					r.URL, r.Peer, r.Status, r.Body, r.Error, mtls[r.URL])
			}
		case ops[r.URL]:
			if r.Status != http.StatusNotFound {
				t.Errorf("%s (the ops port) answered %d %q (%s); want 404", r.URL, r.Status, r.Body, r.Error)
			}
		case r.URL == gatewayURL:
			if r.Status != http.StatusUnauthorized || !strings.Contains(r.Body, `"unauthenticated"`) {
				t.Errorf("%s without a token answered %d %q (%s); want 401 unauthenticated", r.URL, r.Status, r.Body, r.Error)
			}
		}
	}
}

// runnerIsolated: a server the test starts on a network of its own answers
// a container on that network, and nothing from the runner's network
// namespace.
func (d *deployment) runnerIsolated(t *testing.T) {
	ctx := t.Context()
	d.isolate = d.Name + "-isolated"
	if _, err := deploytest.Docker(ctx, "network", "create", "--label", "deploytest="+d.Name, d.isolate); err != nil {
		t.Fatal(err)
	}
	target := d.Name + "-target"
	if _, err := deploytest.Docker(ctx, "run", "-d", "--name", target, "--label", "deploytest="+d.Name,
		"--network", d.isolate, "--read-only", "--cap-drop", "ALL", "--user", "65534:65534",
		d.probe, "serve", "--addr=:8080"); err != nil {
		t.Fatal(err)
	}
	cs, err := deploytest.Inspect(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + cs[0].NetworkSettings.Networks[d.isolate].IPAddress + ":8080/"

	// The control: the server answers on its own network.
	if r := d.dial(t, []string{"--network", d.isolate}, url)[0]; r.Status != http.StatusOK {
		t.Fatalf("from the target's own network, %s answered %d (%s); the check below would prove nothing", url, r.Status, r.Error)
	}
	runner, err := d.Container(ctx, "runner")
	if err != nil {
		t.Fatal(err)
	}
	r := d.dial(t, []string{"--network", "container:" + runner.ID}, url)[0]
	if r.Status != 0 || r.Error == "" {
		t.Errorf("from the runner's network namespace, %s answered %d %q; want no connection", url, r.Status, r.Body)
	}
	t.Logf("from the runner's network namespace: %s", r.Error)
}

// dial runs the probe's dial in a throwaway container with the docker run
// flags given, and returns a result per URL.
func (d *deployment) dial(t *testing.T, flags []string, urls ...string) []deploytest.ProbeResult {
	t.Helper()
	return d.dialWith(t, flags, nil, urls...)
}

// dialWith is dial with the probe's dial flags given too (--header).
func (d *deployment) dialWith(t *testing.T, flags, dialFlags []string, urls ...string) []deploytest.ProbeResult {
	t.Helper()
	args := append([]string{"run", "--rm", "--label", "deploytest=" + d.Name, "--read-only", "--cap-drop", "ALL",
		"--user", "65534:65534"}, flags...)
	args = append(append(append(args, d.probe, "dial"), dialFlags...), urls...)
	out, err := deploytest.Docker(t.Context(), args...)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	rs, err := deploytest.ParseProbe(out)
	if err != nil || len(rs) != len(urls) {
		t.Fatalf("probe: %v, %d results for %d URLs:\n%s", err, len(rs), len(urls), out)
	}
	for _, r := range rs {
		t.Logf("probe %s: peer %q, %d %q %s", r.URL, r.Peer, r.Status, r.Body, r.Error)
	}
	return rs
}

// startAPI starts the stand-ins for api.github.com and api.openai.com
// (the probe's serve and model): the probe serving TLS on a network of its
// own with a public (non-private) subnet, as the runner's egress dialer
// refuses private addresses. The runner reaches them through the
// override's extra_hosts and roots; nothing leaves the host.
func (d *deployment) startAPI(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(d.dir, "api")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeCerts(t, dir, "api.github.com", "api.openai.com")
	for i := range 5 {
		b := randomBytes(t, 1)
		subnet := fmt.Sprintf("11.254.%d.0/24", b[0])
		d.apiIP = fmt.Sprintf("11.254.%d.10", b[0])
		d.modelIP = fmt.Sprintf("11.254.%d.11", b[0])
		name := d.Name + "-api"
		_, err := deploytest.Docker(ctx, "network", "create", "--label", "deploytest="+d.Name, "--subnet", subnet, name)
		if err == nil {
			d.apiNet = name
			break
		}
		if i == 4 {
			t.Fatal(err)
		}
	}
	if _, err := deploytest.Docker(ctx, "run", "-d", "--name", d.Name+"-api", "--label", "deploytest="+d.Name,
		"--network", d.apiNet, "--ip", d.apiIP, "--read-only", "--cap-drop", "ALL", "--user", "65534:65534",
		"-v", dir+":/run/api:ro", d.probe, "serve", "--addr=:443",
		"--cert=/run/api/cert.pem", "--key=/run/api/key.pem", "--token="+apiToken); err != nil {
		t.Fatal(err)
	}
	if _, err := deploytest.Docker(ctx, "run", "-d", "--name", d.Name+"-model", "--label", "deploytest="+d.Name,
		"--network", d.apiNet, "--ip", d.modelIP, "--read-only", "--cap-drop", "ALL", "--user", "65534:65534",
		"-v", dir+":/run/api:ro", d.probe, "model", "--addr=:443",
		"--cert=/run/api/cert.pem", "--key=/run/api/key.pem", "--token="+llmKey, "--model="+chatModel); err != nil {
		t.Fatal(err)
	}
}

// override is the test's compose file over the deployment's: the runner
// also reaches the stand-ins, as api.github.com and api.openai.com,
// trusting their CA; and
// every image is labelled with the project, so that tearDown finds them
// all (a service built twice, as ca and ca-init are, leaves an untagged
// one).
func (d *deployment) override(t *testing.T) string {
	var b strings.Builder
	b.WriteString("services:\n")
	for _, s := range []string{"gateway", "policy", "runner", "broker", "audit", "scheduler", "worker", "engine", "ca", "ca-init", "cli"} {
		fmt.Fprintf(&b, "  %s:\n    build: {labels: {deploytest: %s}}\n", s, d.Name)
		if s == "runner" {
			fmt.Fprintf(&b, `    networks: {%[1]s: {}}
    extra_hosts: ["api.github.com:%[2]s", "api.openai.com:%[4]s"]
    environment: {SSL_CERT_FILE: /run/deploytest/roots.pem}
    volumes: ["%[3]s:/run/deploytest/roots.pem:ro"]
`, d.apiNet, d.apiIP, filepath.Join(d.dir, "api", "ca.pem"), d.modelIP)
		}
	}
	fmt.Fprintf(&b, "networks:\n  %s: {external: true}\n", d.apiNet)
	path := filepath.Join(d.dir, "override.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// flow is the README's walk-through against the deployment, through the
// published port: pair with the setup code from the gateway's log,
// publish and approve a tool, invoke it with curl, store a secret and use
// it, verify the audit log.
func (d *deployment) flow(t *testing.T) {
	ctx := t.Context()
	logs, err := d.Logs(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	code := setupCode(logs)
	if code == "" {
		t.Fatalf("no setup code in the gateway's log:\n%s", logs)
	}
	d.contractual(t, "", "pair", "--setup-code", code, "--name", "deploytest", "--server", d.url)

	out := d.contractual(t, "", "publish", d.tool("textkit", "textkit.wasm"), "--contract", d.tool("textkit", "contract.yaml"))
	d.textkit = digestIn(t, out)
	d.contractual(t, "", "contracts", "approve", d.textkit, "--reason", "deploytest")
	var got struct {
		Output struct{ Slug string } `json:"output"`
	}
	d.curlInvoke(t, `{"tool": "textkit.slugify", "input": {"text": "Hello, Contractual World!"}}`, &got)
	if got.Output.Slug != "hello-contractual-world" {
		t.Errorf("textkit.slugify: %+v", got)
	}

	d.contractual(t, apiToken+"\n", "secrets", "put", "GITHUB_TOKEN")
	out = d.contractual(t, "", "publish", d.tool("ghwhoami", "ghwhoami.wasm"), "--contract", d.tool("ghwhoami", "contract.yaml"))
	d.contractual(t, "", "contracts", "approve", digestIn(t, out))
	d.whoami(t)
	all, err := d.Compose(ctx, 2*time.Minute, "logs", "--no-color")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(all, []byte(apiToken)) {
		t.Error("the secret's value is in the services' logs")
	}

	if out := d.contractual(t, "", "audit", "verify", "--online", "--full"); !strings.Contains(out, "audit log intact") {
		t.Errorf("audit verify: %s", out)
	}
}

// whoami invokes ghwhoami with curl: the stand-in API answers only with
// the stored secret in the Authorization header.
func (d *deployment) whoami(t *testing.T) {
	var got struct {
		Output struct {
			Login       string `json:"login"`
			PublicRepos int    `json:"public_repos"`
		} `json:"output"`
	}
	d.curlInvoke(t, `{"tool": "ghwhoami.whoami", "input": {}}`, &got)
	if got.Output.Login != "deploytest" || got.Output.PublicRepos != 7 {
		t.Errorf("ghwhoami.whoami: %+v", got)
	}
}

// killRunner kills the runner's main process (from the host, as a crash
// would) while devices call a tool, and checks that docker restarts it,
// that calls succeed again, and that every call the gateway acknowledged
// is in the audit log. It returns the acknowledged decisions.
func (d *deployment) killRunner(t *testing.T) []string {
	ctx := t.Context()
	before, err := d.Container(ctx, "runner")
	if err != nil {
		t.Fatal(err)
	}
	token := d.token(t)
	hc := &http.Client{Timeout: 2 * time.Minute}
	var (
		mu       sync.Mutex
		acked    []string
		failures = map[string]int{}
		progress = make(chan struct{}, 1)
		stop     = make(chan struct{})
		once     sync.Once
		wg       sync.WaitGroup
	)
	halt := func() { once.Do(func() { close(stop) }); wg.Wait() }
	defer halt()
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id, err := invoke(ctx, hc, d.url, token, fmt.Sprintf("call %d of worker %d", i, w))
				mu.Lock()
				if err != nil {
					failures[short(err.Error())]++
				} else {
					acked = append(acked, id)
				}
				mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitCalls := func(n int) {
		t.Helper()
		deadline := time.After(5 * time.Minute)
		for count() < n {
			select {
			case <-progress:
			case <-deadline:
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%d calls acknowledged, want %d; failures %v", len(acked), n, failures)
			}
		}
	}

	waitCalls(20)
	events := d.events(t, before.ID, time.Now())
	if err := syscall.Kill(before.State.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing the runner (pid %d): %v", before.State.Pid, err)
	}
	killedAt := count()
	if err := events.wait("die", "start", "health_status: healthy"); err != nil {
		t.Fatalf("the runner after the kill: %v", err)
	}
	after, err := d.Container(ctx, "runner")
	if err != nil {
		t.Fatal(err)
	}
	if after.ID != before.ID || after.RestartCount <= before.RestartCount || after.State.Pid == before.State.Pid {
		t.Errorf("runner: id %s→%s, restarts %d→%d, pid %d→%d; want the same container restarted",
			before.ID[:12], after.ID[:12], before.RestartCount, after.RestartCount, before.State.Pid, after.State.Pid)
	}
	healthyAt := count()
	waitCalls(healthyAt + 20)
	halt()
	t.Logf("%d calls acknowledged (%d before the kill, %d by the time the runner was healthy again); failures: %v",
		len(acked), killedAt, healthyAt, failures)

	logged := d.auditDecisions(t, token)
	var missing []string
	for _, id := range acked {
		if !logged[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d acknowledged calls are not in the audit log as run: %v", len(missing), len(acked), missing)
	}
	return acked
}

// downUp takes the project down (keeping its volumes) and up again, and
// checks that the contracts, the device, the secret and the audit log
// survived: the device's token still works, the tool that uses the
// secret still runs, the acknowledged calls are still logged, the log
// verifies against the checkpoint the CLI pinned before, and the jobs and
// the worker's record of their runs are still there.
func (d *deployment) downUp(t *testing.T, acked []string) {
	ctx := t.Context()
	if err := d.Down(ctx, false); err != nil {
		t.Fatal(err)
	}
	up, err := d.Up(ctx)
	if err != nil {
		t.Fatalf("compose up: %v", err)
	}
	t.Logf("docker compose up --wait (built images, existing volumes): %.1fs to all healthy", up.Seconds())

	list := d.contractual(t, "", "contracts", "list", "--state", "approved")
	for _, name := range []string{"textkit", "ghwhoami"} {
		if !strings.Contains(list, name) {
			t.Errorf("contract %s is not approved after down and up:\n%s", name, list)
		}
	}
	if out := d.contractual(t, "", "devices", "list"); !strings.Contains(out, "deploytest") {
		t.Errorf("devices list after down and up:\n%s", out)
	}
	if out := d.contractual(t, "", "secrets", "list"); !strings.Contains(out, "GITHUB_TOKEN") {
		t.Errorf("secrets list after down and up:\n%s", out)
	}
	d.whoami(t)
	logged := d.auditDecisions(t, d.token(t))
	for _, id := range acked {
		if !logged[id] {
			t.Errorf("acknowledged call %s is not in the audit log after down and up", id)
		}
	}
	if out := d.contractual(t, "", "audit", "verify", "--online", "--full"); !strings.Contains(out, "audit log intact") {
		t.Errorf("audit verify after down and up: %s", out)
	}
	if d.jobRun != "" {
		if out := d.contractual(t, "", "jobs", "list", "--state", "approved"); !strings.Contains(out, "deploytest-now") {
			t.Errorf("jobs list after down and up:\n%s", out)
		}
		runs := contractualv1connect.NewJobRunServiceClient(http.DefaultClient, d.url, connect.WithInterceptors(bearer(d.token(t))))
		resp, err := runs.GetRun(ctx, &contractualv1.GetRunRequest{Id: d.jobRun})
		if err != nil || resp.GetRun().GetState() != contractualv1.RunState_RUN_STATE_SUCCEEDED {
			t.Errorf("GetRun %s after down and up: %v, %v; want it succeeded", d.jobRun, resp.GetRun(), err)
		}
	}
}

// cliImage: the Dockerfile's cli target, run as the compose file's cli
// service (profile cli), runs a tool from the working directory, mounted
// read-only, under its contract.
func (d *deployment) cliImage(t *testing.T) {
	if _, err := d.Compose(t.Context(), 45*time.Minute, "--profile", "cli", "build", "cli"); err != nil {
		t.Fatal(err)
	}
	out, err := d.Compose(t.Context(), 5*time.Minute, "--profile", "cli", "run", "--rm", "cli",
		"run", "tools/textkit/textkit.wasm", "--contract", "tools/textkit/contract.yaml",
		"--export", "slugify", "--input", `{"text": "Hello, Contractual World!"}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != `{"slug":"hello-contractual-world"}` {
		t.Errorf("contractual run in the cli image: %q", got)
	}
}

// contractual runs the CLI with stdin against the deployment and returns
// its output, failing the test on a non-zero exit.
func (d *deployment) contractual(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.cli, args...)
	cmd.Env = append(os.Environ(), "CONTRACTUAL_CONFIG="+d.config, "CONTRACTUAL_SERVER="+d.url)
	if d.socks != "" {
		cmd.Env = append(cmd.Env, "HTTP_PROXY=socks5://"+d.socks, "NO_PROXY=")
	}
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("contractual %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// curlInvoke calls ToolService/Invoke with curl, as the README does, and
// decodes the answer into v.
func (d *deployment) curlInvoke(t *testing.T, body string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	args := []string{"-sS", "--fail-with-body", d.url + "/contractual.v1.ToolService/Invoke",
		"-H", "Authorization: Bearer " + d.token(t),
		"-H", "Content-Type: application/json",
		"-d", body}
	if d.socks != "" {
		args = append(args, "--proxy", "socks5h://"+d.socks) // the proxy resolves the name
	}
	out, err := exec.CommandContext(ctx, "curl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl Invoke %s: %v\n%s", body, err, out)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("Invoke %s: %v\n%s", body, err, out)
	}
}

// token is the paired CLI's device token.
func (d *deployment) token(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.config, "device.token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (d *deployment) tool(name, file string) string {
	return filepath.Join(d.root, "tools", name, file)
}

// auditDecisions reads the whole audit log, oldest first, and returns the
// decisions whose call ran ("call.run", outcome "ok").
func (d *deployment) auditDecisions(t *testing.T, token string) map[string]bool {
	t.Helper()
	ran := map[string]bool{}
	for _, e := range d.auditEvents(t, token) {
		if e.GetAction() == "call.run" && e.GetOutcome() == "ok" && e.GetDecisionId() != "" {
			ran[e.GetDecisionId()] = true
		}
	}
	return ran
}

// auditEvents reads the whole audit log, oldest first.
func (d *deployment) auditEvents(t *testing.T, token string) []*contractualv1.AuditEvent {
	t.Helper()
	c := contractualv1connect.NewAuditServiceClient(http.DefaultClient, d.url, connect.WithInterceptors(bearer(token)))
	var events []*contractualv1.AuditEvent
	for {
		resp, err := c.Entries(t.Context(), &contractualv1.EntriesRequest{After: uint64(len(events))})
		if err != nil {
			t.Fatalf("audit Entries after %d: %v", len(events), err)
		}
		if len(resp.GetEntries()) == 0 {
			return events
		}
		for _, enc := range resp.GetEntries() {
			e := &contractualv1.AuditEvent{}
			if err := proto.Unmarshal(enc, e); err != nil {
				t.Fatalf("audit entry %d: %v", len(events)+1, err)
			}
			events = append(events, e)
		}
	}
}

// invoke calls textkit.slugify with text and returns the decision of the
// acknowledged call.
func invoke(ctx context.Context, hc *http.Client, url, token, text string) (string, error) {
	body, _ := json.Marshal(map[string]any{"tool": "textkit.slugify", "input": map[string]string{"text": text}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/contractual.v1.ToolService/Invoke", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	var r struct {
		DecisionID string `json:"decisionId"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.DecisionID == "" {
		return "", fmt.Errorf("an answer without a decision (%v): %s", err, b)
	}
	return r.DecisionID, nil
}

// events follows docker's events of one container from now on.
type events struct {
	cmd  *exec.Cmd
	scan *bufio.Scanner
}

func (d *deployment) events(t *testing.T, id string, since time.Time) *events {
	t.Helper()
	// --since replays what happened from then on, whenever the command
	// connects to the daemon.
	cmd := exec.CommandContext(t.Context(), "docker", "events", "--filter", "container="+id,
		"--since", strconv.FormatFloat(float64(since.UnixNano())/1e9, 'f', 3, 64), "--format", "{{.Action}}")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &events{cmd: cmd, scan: bufio.NewScanner(out)}
}

// wait reads events until it has seen each of want, in order, or 5
// minutes have passed.
func (e *events) wait(want ...string) error {
	timer := time.AfterFunc(5*time.Minute, func() { e.cmd.Process.Kill() })
	defer timer.Stop()
	var seen []string
	for len(want) > 0 && e.scan.Scan() {
		seen = append(seen, e.scan.Text())
		if e.scan.Text() == want[0] {
			want = want[1:]
		}
	}
	if len(want) > 0 {
		return fmt.Errorf("events %q, still waiting for %q", seen, want)
	}
	return nil
}

func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}

var (
	digestRE = regexp.MustCompile(`sha256:[0-9a-f]{64}`)
	// setupCodeRE finds the setup code in the gateway's log: a text line
	// "… setup code ABCD1234 …" or a JSON one with "setup_code":"ABCD1234".
	setupCodeRE = regexp.MustCompile(`setup[ _]code"?[ :=]+"?([0-9A-Z]{8})\b`)
)

func digestIn(t *testing.T, out string) string {
	t.Helper()
	dg := digestRE.FindString(out)
	if dg == "" {
		t.Fatalf("no digest in %q", out)
	}
	return dg
}

// setupCode is the last setup code in a log.
func setupCode(log string) string {
	m := setupCodeRE.FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}

// short is the start of an error message, to count failures by.
func short(s string) string {
	if len(s) > 160 {
		s = s[:160]
	}
	return s
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// freePort is a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func goCmd(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	return cmd.CombinedOutput()
}

// writeCerts writes a CA (ca.pem) and a server certificate for hosts signed
// by it (cert.pem, key.pem) into dir, readable by the stand-ins' user.
func writeCerts(t *testing.T, dir string, hosts ...string) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "deploytest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: hosts[0]}, DNSNames: hosts,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"ca.pem":   {Type: "CERTIFICATE", Bytes: caDER},
		"cert.pem": {Type: "CERTIFICATE", Bytes: leafDER},
		"key.pem":  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSetupCode(t *testing.T) {
	for log, want := range map[string]string{
		`{"time":"…","level":"INFO","msg":"no device is paired: pair the first with this setup code","setup_code":"3DDLYCJ8","expires":"…"}`: "3DDLYCJ8",
		"contractual: setup code 3DDLYCJ8 (valid 10 minutes)\n":                                                                              "3DDLYCJ8",
		"setup code AAAAAAAA expired\nsetup code BBBBBBBB (valid 10 minutes)\n":                                                              "BBBBBBBB",
		`{"msg":"paired","device":"device:1"}`:                                                                                               "",
	} {
		if got := setupCode(log); got != want {
			t.Errorf("setupCode(%q) = %q, want %q", log, got, want)
		}
	}
}
