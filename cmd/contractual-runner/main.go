// Command contractual-runner is Contractual's runner service as its own process,
// for the compose deployment: `contractual-runner [serve] [flags]`, and
// `contractual-runner health` for the container's healthcheck. See
// internal/runner's Daemon and internal/daemon.
package main

import (
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/runner"
)

func main() { daemon.Main(runner.Daemon()) }
