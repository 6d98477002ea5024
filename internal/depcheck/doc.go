// Package depcheck is a test, with no code of its own: each service binary
// (cmd/contractual-<service>) links only what its service needs, as one
// table in depcheck_test.go states — the policy binary no wazero, the
// gateway none of the broker's storage, the scheduler, the worker and the
// engine none of the sandbox, the egress dialer or the broker, no binary a
// test-only package or Tailscale's code (only cmd/contractual, for serve --tailnet, does). It
// reads the build graph from `go list -deps` and names every forbidden
// package a binary links with the shortest chain of imports that pulls it
// in:
//
//	go test ./internal/depcheck
package depcheck
