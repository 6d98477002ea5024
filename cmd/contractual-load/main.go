// Command contractual-load calls a running Contractual server the way an
// outside client does, over HTTP with a paired device's token, at one or
// more fixed concurrencies, and prints each run's latency percentiles and
// throughput next to those of the cheapest authenticated call (the
// baseline), interleaved in the same run. Given the server's process id
// it also prints the server's peak RSS over each run.
//
//	contractual-load --tool textkit.slugify --input '{"text": "Hi"}' -c 1,8,32,128 -n 2000 --pid $(pgrep -n contractual)
//
// The device needs scope invoke, and read for the baseline.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/contractual/contractual/internal/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "contractual-load:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("contractual-load", flag.ContinueOnError)
	server := fs.String("server", defaultServer(), "the server's URL ($CONTRACTUAL_SERVER; default: the one this device paired with)")
	tokenFile := fs.String("token-file", filepath.Join(configDir(), "device.token"), "the device's token")
	tool := fs.String("tool", "", "the tool to call, e.g. textkit.slugify")
	input := fs.String("input", "{}", "the tool's input, JSON")
	concs := fs.String("c", "1,8,32,128", "the concurrencies, comma-separated")
	n := fs.Int("n", 1000, "the calls of each kind at each concurrency")
	bare := fs.Bool("baseline", true, "interleave the cheapest authenticated call as a baseline")
	pid := fs.Int("pid", 0, "the server's process id, to read its RSS (same machine and user)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tool == "" || fs.NArg() != 0 {
		return errors.New("usage: contractual-load --tool NAME [--input JSON] [-c 1,8,32,128] [-n 1000] [--pid PID]")
	}
	var in any
	if err := json.Unmarshal([]byte(*input), &in); err != nil {
		return fmt.Errorf("--input: %w", err)
	}
	value, err := structpb.NewValue(in)
	if err != nil {
		return fmt.Errorf("--input: %w", err)
	}
	var levels []int
	for f := range strings.SplitSeq(*concs, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			return fmt.Errorf("-c: %q is not a concurrency", f)
		}
		levels = append(levels, c)
	}
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return err
	}

	d := loadtest.NewDevice(loadtest.NewHTTPClient(slices.Max(levels)), strings.TrimRight(*server, "/"), strings.TrimSpace(string(tok)))
	call := d.Invoker(*tool, value)
	for _, c := range levels {
		if *pid != 0 {
			if err := loadtest.ResetPeakRSS(*pid); err != nil {
				return err
			}
		}
		var inv, base loadtest.Result
		if *bare {
			base, inv = loadtest.Interleave(ctx, c, *n, 10, d.BareCall, call)
		} else {
			inv = loadtest.Run(ctx, c, *n, call)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Fprintf(out, "c=%d %s: %v, %.0f calls/s\n", c, *tool, inv, inv.Throughput())
		if *bare {
			fmt.Fprintf(out, "c=%d baseline: %v, %.0f calls/s; p50 %.2f× the baseline's\n", c, base, base.Throughput(),
				float64(inv.Quantile(0.5))/float64(max(base.Quantile(0.5), 1)))
		}
		if *pid != 0 {
			peak, err := loadtest.PeakRSS(*pid)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "c=%d server peak RSS %.1f MB\n", c, float64(peak)/1e6)
		}
	}
	return nil
}

// defaultServer is the CLI's: $CONTRACTUAL_SERVER, else the server this
// device paired with, else the default local address.
func defaultServer() string {
	if u := os.Getenv("CONTRACTUAL_SERVER"); u != "" {
		return u
	}
	if b, err := os.ReadFile(filepath.Join(configDir(), "server")); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b))
	}
	return "http://127.0.0.1:7700"
}

// configDir is the CLI's: $CONTRACTUAL_CONFIG, else
// $XDG_CONFIG_HOME/contractual, else ~/.config/contractual.
func configDir() string {
	if d := os.Getenv("CONTRACTUAL_CONFIG"); d != "" {
		return d
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "contractual-config"
	}
	return filepath.Join(d, "contractual")
}
