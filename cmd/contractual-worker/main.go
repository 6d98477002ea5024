// Command contractual-worker is Contractual's worker service as its own
// process, for the compose deployment: `contractual-worker [serve] [flags]`,
// and `contractual-worker health` for the container's healthcheck. See
// internal/worker's Daemon and internal/daemon.
package main

import (
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/worker"
)

func main() { daemon.Main(worker.Daemon()) }
