// Command contractual-gateway is Contractual's gateway service as its own process,
// for the compose deployment: `contractual-gateway [serve] [flags]`, and
// `contractual-gateway health` for the container's healthcheck. See
// internal/gateway's Daemon and internal/daemon.
package main

import (
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/gateway"
)

func main() { daemon.Main(gateway.Daemon()) }
