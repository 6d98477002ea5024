// Command contractual-audit is Contractual's audit service as its own process,
// for the compose deployment: `contractual-audit [serve] [flags]`, and
// `contractual-audit health` for the container's healthcheck. See
// internal/audit's Daemon and internal/daemon.
package main

import (
	"github.com/contractual/contractual/internal/audit"
	"github.com/contractual/contractual/internal/daemon"
)

func main() { daemon.Main(audit.Daemon()) }
