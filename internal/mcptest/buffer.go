package mcptest

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer safe for a process's writes and a test's reads
// at once: the stderr of an MCP server or bridge a test launches.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
