// Command contractual-scheduler is Contractual's scheduler as its own
// process, for the compose deployment: `contractual-scheduler [serve]
// [flags]`, and `contractual-scheduler health` for the container's
// healthcheck. See internal/scheduler's Daemon and internal/daemon.
package main

import (
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/scheduler"
)

func main() { daemon.Main(scheduler.Daemon()) }
