package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"unicode/utf8"
)

// result is a tool's output as the model is given it.
type result struct {
	// text is what the model sees: the whole output, or its beginning and
	// the artifact's reference.
	text string
	// digest is "sha256:<hex>" of the whole output; size its length.
	digest string
	size   int64
	// artifact is set when the whole output was kept as an artifact.
	artifact string
}

// sanitize prepares a runner's output for the model. The runner has
// already redacted every secret released for the call (raw, base64, hex,
// URL-encoded); here the output is capped: one larger than ResultBytes, or
// not UTF-8, is kept as an artifact of the session (content-addressed, for
// ArtifactTTL), and the model gets its beginning, its size and its
// reference instead.
func (s *Service) sanitize(ctx context.Context, session string, out []byte) (result, error) {
	sum := sha256.Sum256(out)
	res := result{digest: "sha256:" + hex.EncodeToString(sum[:]), size: int64(len(out))}
	if len(out) <= s.cfg.ResultBytes && utf8.Valid(out) {
		res.text = string(out)
		return res, nil
	}
	if err := s.putArtifact(ctx, session, res.digest, out, s.cfg.Now().Add(s.cfg.ArtifactTTL)); err != nil {
		return result{}, err
	}
	if _, err := s.pruneArtifacts(ctx); err != nil {
		s.log.Warn("engine: pruning artifacts", "err", err)
	}
	res.artifact = res.digest
	if !utf8.Valid(out) {
		res.text = fmt.Sprintf("[binary output of %d bytes, kept as artifact %s; not shown]", len(out), res.digest)
		return res, nil
	}
	head := prefix(out, s.cfg.ResultBytes/4)
	res.text = fmt.Sprintf("%s\n[output truncated: %d of %d bytes shown; the whole output is kept as artifact %s, which the owner can open]",
		head, len(head), len(out), res.digest)
	return res, nil
}

// prefix returns at most n bytes of the UTF-8 text b, cut at a character
// boundary.
func prefix(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n])
}
