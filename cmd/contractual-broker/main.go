// Command contractual-broker is Contractual's broker service as its own process,
// for the compose deployment: `contractual-broker [serve] [flags]`, and
// `contractual-broker health` for the container's healthcheck. See
// internal/broker's Daemon and internal/daemon.
package main

import (
	"github.com/contractual/contractual/internal/broker"
	"github.com/contractual/contractual/internal/daemon"
)

func main() { daemon.Main(broker.Daemon()) }
