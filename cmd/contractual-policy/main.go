// Command contractual-policy is Contractual's policy service as its own process,
// for the compose deployment: `contractual-policy [serve] [flags]`, and
// `contractual-policy health` for the container's healthcheck. See
// internal/policy's Daemon and internal/daemon.
package main

import (
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/policy"
)

func main() { daemon.Main(policy.Daemon()) }
