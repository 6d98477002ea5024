// Package deploytest tests the compose deployment (docker-compose.yml and
// the Dockerfile at the module's root) on a real Docker engine: it builds
// the images, brings a project up, and looks at it from the host (docker
// inspect, /proc/<pid>/status of each container's main process, writes
// through /proc/<pid>/root) and from containers of its own.
//
// The package holds the harness: finding Docker and Compose (Require,
// RequireCompose), driving one compose project (Project, with its
// profiles), reading containers (Container, ReadStatus) and making the
// test's own images (the Go builder for machines without a registry, and
// the probe). Its tests hold the checks: TestCompose for the default
// profile (the gateway on loopback), TestComposeTailnet for the profile
// tailnet (the Tailscale sidecar, on a test tailnet in the test process),
// TestComposeProfiles for what each profile runs and publishes,
// TestComposeEngine for the engine's service and its model settings.
//
// Without Docker, a reachable daemon or the Compose v2 plugin the test
// skips, with a message that says what is missing; with CI=true it fails.
package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Service is one long-running container of the deployment and the user it
// must run as.
type Service struct {
	Name string
	UID  int
}

// GID is the group every service runs in ("contractual").
const GID = 10000

// Services is the table of the deployment's long-running services.
var Services = []Service{
	{"gateway", 10001},
	{"engine", 10002},
	{"policy", 10003},
	{"runner", 10004},
	{"broker", 10005},
	{"scheduler", 10006},
	{"audit", 10007},
	{"worker", 10008},
	{"ca", 10009},
}

// EnvGoImage names the environment variable that picks the Go image the
// Dockerfile builds with. Unset, the test makes BuilderImage from the
// host's toolchain (deploy/builder.sh), so that it needs no registry.
const EnvGoImage = "CONTRACTUAL_GO_IMAGE"

// BuilderImage is the image deploy/builder.sh makes.
const BuilderImage = "contractual-builder:local"

// cmdTimeout bounds one docker command that is not a build or an up: far
// above need, for a machine under heavy load.
const cmdTimeout = 5 * time.Minute

// Require skips t (or, with CI=true, fails it) unless docker, a daemon it
// can reach and the Compose v2 plugin are there, and a static busybox for
// the builder image (unless $CONTRACTUAL_GO_IMAGE names a Go image), and
// the test runs as root (it reads and writes through /proc/<pid>/root of
// containers' processes and kills them); it returns the path of the
// docker binary.
func Require(t testing.TB) string {
	t.Helper()
	docker, msg := find(exec.LookPath, run, os.Geteuid(), os.Getenv(EnvGoImage) == "")
	if msg == "" {
		return docker
	}
	msg = "deploytest: " + msg
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg + " (CI=true: a missing Docker fails the test instead of skipping it)")
	}
	t.Skip(msg)
	return ""
}

// find looks for docker, asks its daemon and its compose plugin, and
// returns docker's path, or what is missing.
func find(lookPath func(string) (string, error), run func(name string, args ...string) ([]byte, error), euid int, builder bool) (docker, missing string) {
	if euid != 0 {
		return "", "the checks look into containers' processes from the host (/proc/<pid>/root, kill): run as root"
	}
	docker, err := lookPath("docker")
	if err != nil {
		return "", "no docker on PATH: install Docker (Debian: apt-get install docker.io) and start dockerd"
	}
	if out, err := run(docker, "version", "--format", "{{.Server.Version}}"); err != nil {
		return "", fmt.Sprintf("the Docker daemon does not answer (%v: %s): start dockerd, or set DOCKER_HOST", err, firstLine(out))
	}
	if out, err := run(docker, "compose", "version", "--short"); err != nil {
		return "", fmt.Sprintf("no Compose v2 plugin (docker compose version: %v: %s): install docker-compose-plugin, "+
			"or build it into ~/.docker/cli-plugins (see .ci/run)", err, firstLine(out))
	}
	if builder {
		// ldd fails on a static binary.
		if bb, err := lookPath("busybox"); err != nil {
			return "", "no busybox on PATH for the builder image: install busybox-static, or set " + EnvGoImage + " to a Go image"
		} else if _, err := run("ldd", bb); err == nil {
			return "", bb + " is not static: install busybox-static, or set " + EnvGoImage + " to a Go image"
		}
	}
	return docker, ""
}

// RequireCompose skips t (or, with CI=true, fails it) unless docker and
// its Compose v2 plugin are there: what `docker compose config` needs, no
// daemon.
func RequireCompose(t testing.TB) {
	t.Helper()
	msg := findCompose(exec.LookPath, run)
	if msg == "" {
		return
	}
	msg = "deploytest: " + msg
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg + " (CI=true: a missing Docker fails the test instead of skipping it)")
	}
	t.Skip(msg)
}

// findCompose looks for docker and its compose plugin, and returns what is
// missing.
func findCompose(lookPath func(string) (string, error), run func(name string, args ...string) ([]byte, error)) (missing string) {
	docker, err := lookPath("docker")
	if err != nil {
		return "no docker on PATH: install Docker (Debian: apt-get install docker.io)"
	}
	if out, err := run(docker, "compose", "version", "--short"); err != nil {
		return fmt.Sprintf("no Compose v2 plugin (docker compose version: %v: %s): install docker-compose-plugin, "+
			"or build it into ~/.docker/cli-plugins (see .ci/run)", err, firstLine(out))
	}
	return ""
}

func run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// Docker runs docker with args and returns its standard output; an error
// carries its standard error.
func Docker(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	return output(exec.CommandContext(ctx, "docker", args...))
}

func output(cmd *exec.Cmd) ([]byte, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, tail(stderr.Bytes(), 4096))
	}
	return out, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Root is the module's root directory: the nearest parent of the working
// directory that holds go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// GoImage is the Go image to build with: $CONTRACTUAL_GO_IMAGE, or else
// BuilderImage, which it makes with deploy/builder.sh if it is missing or
// was made from another toolchain.
func GoImage(ctx context.Context, root string) (string, error) {
	if img := os.Getenv(EnvGoImage); img != "" {
		return img, nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "deploy", "builder.sh"), BuilderImage)
	cmd.Dir = root
	if _, err := output(cmd); err != nil {
		return "", err
	}
	return BuilderImage, nil
}

// Project is one compose project of the deployment.
type Project struct {
	// Name is the project's name (docker compose -p), unique per test.
	Name string
	// Files are the compose files, the deployment's first.
	Files []string
	// Profiles are the compose profiles every command enables (--profile),
	// in place of the default of the deployment's .env.
	Profiles []string
	// Env is added to the environment of every docker compose command
	// (CONTRACTUAL_PORT, CONTRACTUAL_SECRETS, ...).
	Env []string
	// Log receives the output of builds and of up and down.
	Log io.Writer
}

// Compose runs docker compose on the project with args, bounded by
// timeout, and returns its standard output; its standard error goes to
// p.Log, and its end to the error.
func (p *Project) Compose(ctx context.Context, timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := []string{"compose", "-p", p.Name}
	for _, f := range p.Files {
		full = append(full, "-f", f)
	}
	for _, pr := range p.Profiles {
		full = append(full, "--profile", pr)
	}
	cmd := exec.CommandContext(ctx, "docker", append(full, args...)...)
	cmd.Env = append(os.Environ(), p.Env...)
	var stderr bytes.Buffer
	cmd.Stderr = io.MultiWriter(&stderr, p.Log)
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("docker %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, tail(stderr.Bytes(), 8192))
	}
	return out, nil
}

// Up runs `docker compose up --wait`, which returns once every service is
// running and healthy (and ca-init has exited 0), and returns how long it
// took.
func (p *Project) Up(ctx context.Context, args ...string) (time.Duration, error) {
	start := time.Now()
	_, err := p.Compose(ctx, 15*time.Minute, append([]string{"up", "--wait", "--wait-timeout", "600"}, args...)...)
	return time.Since(start), err
}

// Down runs `docker compose down`, and with volumes also removes the
// project's volumes.
func (p *Project) Down(ctx context.Context, volumes bool) error {
	args := []string{"down", "--remove-orphans", "--timeout", "60"}
	if volumes {
		args = append(args, "--volumes")
	}
	_, err := p.Compose(ctx, cmdTimeout, args...)
	return err
}

// Logs is what service has logged (its standard output and error).
func (p *Project) Logs(ctx context.Context, service string) (string, error) {
	out, err := p.Compose(ctx, cmdTimeout, "logs", "--no-color", "--no-log-prefix", service)
	return string(out), err
}

// Containers inspects every container of the project, the stopped ones
// too.
func (p *Project) Containers(ctx context.Context) ([]Container, error) {
	ids, err := Docker(ctx, "ps", "-a", "-q", "--no-trunc", "--filter", "label=com.docker.compose.project="+p.Name)
	if err != nil {
		return nil, err
	}
	return Inspect(ctx, strings.Fields(string(ids))...)
}

// Container returns the container of service, failing if there is not
// exactly one.
func (p *Project) Container(ctx context.Context, service string) (Container, error) {
	cs, err := p.Containers(ctx)
	if err != nil {
		return Container{}, err
	}
	var found []Container
	for _, c := range cs {
		if c.Service() == service {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		return Container{}, fmt.Errorf("%d containers of service %s in project %s", len(found), service, p.Name)
	}
	return found[0], nil
}

// Container is the part of `docker inspect` the test reads.
type Container struct {
	ID     string
	Name   string
	Config struct {
		User   string
		Image  string
		Env    []string
		Labels map[string]string
	}
	State struct {
		Status   string
		Pid      int
		ExitCode int
		Health   *struct{ Status string }
	}
	RestartCount int
	HostConfig   struct {
		ReadonlyRootfs bool
		CapDrop        []string
		CapAdd         []string
		SecurityOpt    []string
		Privileged     bool
		Memory         int64
		PidsLimit      *int64
		NetworkMode    string
		RestartPolicy  struct{ Name string }
		Tmpfs          map[string]string
		PortBindings   map[string][]PortBinding
	}
	NetworkSettings struct {
		Ports    map[string][]PortBinding
		Networks map[string]struct{ IPAddress string }
	}
	Mounts []Mount
}

// PortBinding is a published port.
type PortBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string
}

// Mount is a volume or bind mount of a container.
type Mount struct {
	Type        string
	Name        string
	Source      string
	Destination string
	RW          bool
}

// Service is the compose service the container belongs to.
func (c Container) Service() string { return c.Config.Labels["com.docker.compose.service"] }

// Health is the container's health status ("healthy", "starting",
// "unhealthy"), or "" without a healthcheck.
func (c Container) Health() string {
	if c.State.Health == nil {
		return ""
	}
	return c.State.Health.Status
}

// Inspect inspects containers by id or name.
func Inspect(ctx context.Context, ids ...string) ([]Container, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	out, err := Docker(ctx, append([]string{"inspect", "--type", "container"}, ids...)...)
	if err != nil {
		return nil, err
	}
	var cs []Container
	if err := json.Unmarshal(out, &cs); err != nil {
		return nil, fmt.Errorf("docker inspect: %w", err)
	}
	return cs, nil
}

// Status is the part of /proc/<pid>/status that says what a process may
// do.
type Status struct {
	UID, GID   [4]int // real, effective, saved, filesystem
	Groups     []int
	CapEff     uint64
	NoNewPrivs int
	Seccomp    int // 0 off, 1 strict, 2 filter
}

// ReadStatus reads /proc/<pid>/status.
func ReadStatus(pid int) (Status, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Status{}, err
	}
	defer f.Close()
	return parseStatus(f)
}

func parseStatus(r io.Reader) (Status, error) {
	var s Status
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		var err error
		switch key {
		case "Uid", "Gid":
			ids := &s.UID
			if key == "Gid" {
				ids = &s.GID
			}
			if len(fields) != 4 {
				return s, fmt.Errorf("status: %s has %d fields", key, len(fields))
			}
			for i, f := range fields {
				if ids[i], err = strconv.Atoi(f); err != nil {
					break
				}
			}
		case "Groups":
			for _, f := range fields {
				var g int
				if g, err = strconv.Atoi(f); err != nil {
					break
				}
				s.Groups = append(s.Groups, g)
			}
		case "CapEff":
			if len(fields) == 1 {
				s.CapEff, err = strconv.ParseUint(fields[0], 16, 64)
			}
		case "NoNewPrivs":
			if len(fields) == 1 {
				s.NoNewPrivs, err = strconv.Atoi(fields[0])
			}
		case "Seccomp":
			if len(fields) == 1 {
				s.Seccomp, err = strconv.Atoi(fields[0])
			}
		default:
			continue
		}
		if err != nil {
			return s, fmt.Errorf("status: %s: %w", key, err)
		}
		seen[key] = true
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	for _, k := range []string{"Uid", "Gid", "CapEff", "NoNewPrivs", "Seccomp"} {
		if !seen[k] {
			return s, fmt.Errorf("status: no %s line", k)
		}
	}
	return s, nil
}

// ProbeImage makes the image of the probe (package probe): the probe built
// static on the host, alone in an image imported from a tarball, so that
// it needs neither a registry nor a builder. dir is a scratch directory.
func ProbeImage(ctx context.Context, root, dir, tag string) error {
	bin := filepath.Join(dir, "probe")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./internal/deploytest/probe")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if _, err := output(build); err != nil {
		return err
	}
	tar := exec.CommandContext(ctx, "tar", "-c", "-C", dir, "--owner=0", "--group=0", "probe")
	imp := exec.CommandContext(ctx, "docker", "import", "--change", `ENTRYPOINT ["/probe"]`, "-", tag)
	pipe, err := tar.StdoutPipe()
	if err != nil {
		return err
	}
	imp.Stdin = pipe
	if err := tar.Start(); err != nil {
		return err
	}
	_, ierr := output(imp)
	if err := tar.Wait(); err != nil {
		return fmt.Errorf("tar: %w", err)
	}
	return ierr
}

// ProbeResult is what the probe's dial prints for one URL.
type ProbeResult struct {
	URL    string `json:"url"`
	Peer   string `json:"peer"`
	Status int    `json:"status"`
	Body   string `json:"body"`
	Error  string `json:"error"`
}

// ParseProbe reads the probe's dial output.
func ParseProbe(out []byte) ([]ProbeResult, error) {
	var rs []ProbeResult
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var r ProbeResult
		if err := dec.Decode(&r); err != nil {
			return rs, fmt.Errorf("probe output: %w", err)
		}
		rs = append(rs, r)
	}
	return rs, nil
}
