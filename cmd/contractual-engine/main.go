// Command contractual-engine is Contractual's engine service (the chat
// sessions) as its own process, for the compose deployment:
// `contractual-engine [serve] [flags]`, and `contractual-engine health`
// for the container's healthcheck. See internal/engine's Daemon and
// internal/daemon.
package main

import (
	"github.com/contractual/contractual/internal/daemon"
	"github.com/contractual/contractual/internal/engine"
)

func main() { daemon.Main(engine.Daemon()) }
