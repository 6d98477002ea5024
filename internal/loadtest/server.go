// Package loadtest measures a real `contractual serve` from outside: the
// server runs as its own process, so the resident memory read from
// /proc/<pid>/status is the server's alone, and a load generator calls it
// over real HTTP with paired devices' tokens, as any client would.
//
// The package holds the harness (start the binary, pair devices, publish
// and approve tools, run calls at a fixed concurrency, read the server's
// memory); its tests hold the scenarios, as BenchmarkExternal… benchmarks
// that report percentiles, throughput and memory next to a baseline
// measured in the same run, and as quick TestLoad… tests that check each
// scenario's outcomes.
package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Build compiles the contractual command into dir and returns the binary's
// path. It runs the go command of the toolchain on PATH in the current
// directory, which must be inside the module.
func Build(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "contractual")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/contractual/contractual/cmd/contractual")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building contractual: %w\n%s", err, out)
	}
	return bin, nil
}

// Server is a `contractual serve` process on a free loopback port.
type Server struct {
	// URL is the API's base URL.
	URL string
	// SetupCode pairs the first (owner) device.
	SetupCode string
	// Log is the file that receives the server's standard error.
	Log string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // the process's exit, once done is closed
}

// startTimeout bounds how long a server may take to print its address and
// setup code: far above need, for a machine under heavy load.
const startTimeout = 2 * time.Minute

// Start runs bin serve with its data in dataDir (which it creates) on a
// free loopback port, and returns once the server has printed its URL and
// setup code. The process ends with ctx, or with Stop.
func Start(ctx context.Context, bin, dataDir string) (*Server, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dataDir, "serve.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, bin, "serve", "--data", dataDir, "--addr", "127.0.0.1:0")
	cmd.Env = cleanEnv(dataDir)
	cmd.Stderr = logf
	// A pipe of our own rather than StdoutPipe, which Wait closes: the
	// reader below reads to the end of the output, whenever Wait returns.
	stdout, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		stdout.Close()
		return nil, err
	}
	s := &Server{Log: logPath, cmd: cmd, done: make(chan struct{})}

	// The first lines name the URL and the setup code; the rest is read
	// and dropped so that the server never blocks on a full pipe.
	type first struct{ url, code string }
	got := make(chan first, 1)
	go func() {
		var f first
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, "contractual: serving "); ok {
				f.url, _, _ = strings.Cut(rest, " ")
			}
			if _, rest, ok := strings.Cut(line, "setup code "); ok && f.code == "" {
				f.code, _, _ = strings.Cut(rest, " ")
				got <- f
				break
			}
		}
		io.Copy(io.Discard, stdout)
		stdout.Close()
		close(got) // the reader takes a value sent before the close first
	}()
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case f, ok := <-got:
		if !ok || f.url == "" {
			s.Stop()
			return nil, fmt.Errorf("contractual serve printed no URL and setup code: %s", s.tail())
		}
		s.URL, s.SetupCode = f.url, f.code
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("contractual serve exited at start (%v): %s", s.err, s.tail())
	case <-timer.C:
		s.Stop()
		return nil, fmt.Errorf("contractual serve did not start within %v: %s", startTimeout, s.tail())
	}
}

// cleanEnv is the environment for the server: this process's, without
// Contractual's own variables, with the data directory set.
func cleanEnv(dataDir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONTRACTUAL_") {
			env = append(env, kv)
		}
	}
	return append(env, "CONTRACTUAL_DATA="+dataDir, "CONTRACTUAL_CONFIG="+filepath.Join(dataDir, "config"))
}

// tail is the end of the server's log, for error messages.
func (s *Server) tail() string {
	b, _ := os.ReadFile(s.Log)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// Stop asks the server to shut down (SIGTERM) and waits for it; a server
// that has not exited after a generous grace is killed.
func (s *Server) Stop() error {
	select {
	case <-s.done:
		return s.err
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-s.done:
		return s.err
	case <-timer.C:
		s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("contractual serve did not stop within %v; killed", startTimeout)
	}
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// RSS is the server's resident memory now, in bytes.
func (s *Server) RSS() (uint64, error) { return RSS(s.PID()) }

// PeakRSS is the most resident memory the server has had since it started
// or since the last ResetPeakRSS, in bytes.
func (s *Server) PeakRSS() (uint64, error) { return PeakRSS(s.PID()) }

// ResetPeakRSS resets the peak that PeakRSS reports to the current RSS.
func (s *Server) ResetPeakRSS() error { return ResetPeakRSS(s.PID()) }

// RSS is process pid's resident memory now (VmRSS), in bytes.
func RSS(pid int) (uint64, error) { return procStatus(pid, "VmRSS") }

// PeakRSS is the most resident memory process pid has had (VmHWM) since it
// started or since the last ResetPeakRSS, in bytes.
func PeakRSS(pid int) (uint64, error) { return procStatus(pid, "VmHWM") }

// ResetPeakRSS resets the peak that PeakRSS reports for process pid (one
// of this user's) to its current RSS.
func ResetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// procStatus reads a "kB" field of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", field, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
