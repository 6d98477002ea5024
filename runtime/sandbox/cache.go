package sandbox

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"

	"github.com/contractual/contractual/runtime/wasmbin"
)

// Footprint constants: what a loaded module keeps resident, measured on
// linux/amd64 with wazero 1.12 (see BenchmarkFootprint). A module's own
// runtime (its host modules compiled, the store) and compilation cache cost
// about 160 KiB however small the module; its machine code about 7 bytes per
// byte of the code section (Go-built modules, whose code is most of the
// binary); and the decoded module keeps the binary itself.
const (
	footprintBase     = 192 << 10
	footprintPerCode  = 8
	footprintPerBytes = 1
)

// Footprint estimates the memory that wasm keeps resident once loaded, not
// counting its calls' linear memories: a budget for caches of loaded
// modules. It errs on the high side.
func Footprint(wasm []byte) int64 {
	code, _ := wasmbin.SectionSize(wasm, wasmbin.CodeSectionID)
	return footprintBase + footprintPerCode*int64(code) + footprintPerBytes*int64(len(wasm))
}

// Footprint is Footprint of the module's bytes.
func (m *Module) Footprint() int64 { return m.footprint }

// caches hands out the compilation cache of each module digest. With a
// directory, each digest has its own subdirectory and its own wazero cache,
// shared by every loaded module of that digest and closed with the last
// one, so that the compiled code of a module nobody needs any more can be
// deleted (wazero cannot delete single entries of a shared cache). Without
// a directory, one in-memory cache serves every module.
type caches struct {
	dir    string
	shared wazero.CompilationCache
	log    *slog.Logger

	mu   sync.Mutex
	open map[string]*digestCache // by directory name
	// doomed are directories to delete when their last module closes.
	doomed map[string]bool
}

// digestCache is the open cache of one digest and the modules using it.
type digestCache struct {
	cache wazero.CompilationCache
	refs  int
}

// hexRE is a directory name of caches: a module digest's hex.
var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func newCaches(dir string, log *slog.Logger) (*caches, error) {
	c := &caches{dir: dir, log: log, open: map[string]*digestCache{}, doomed: map[string]bool{}}
	if dir == "" {
		c.shared = wazero.NewCompilationCache()
		return c, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return c, nil
}

// acquire returns the compilation cache of the module digest
// ("sha256:<hex>") and the function that releases it.
func (c *caches) acquire(digest string) (wazero.CompilationCache, func(), error) {
	if c.dir == "" {
		return c.shared, func() {}, nil
	}
	name, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || !hexRE.MatchString(name) {
		return nil, nil, errors.New("malformed module digest " + digest)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.doomed, name)
	dc := c.open[name]
	if dc == nil {
		cache, err := wazero.NewCompilationCacheWithDir(filepath.Join(c.dir, name))
		if err != nil {
			return nil, nil, err
		}
		dc = &digestCache{cache: cache}
		c.open[name] = dc
	}
	dc.refs++
	var once sync.Once
	return dc.cache, func() { once.Do(func() { c.release(name) }) }, nil
}

// release ends one module's use of the cache in directory name.
func (c *caches) release(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dc := c.open[name]
	if dc.refs--; dc.refs > 0 {
		return
	}
	delete(c.open, name)
	if err := dc.cache.Close(context.Background()); err != nil {
		c.log.Warn("closing a compilation cache", "module", "sha256:"+name, "err", err)
	}
	if c.doomed[name] {
		delete(c.doomed, name)
		c.remove(name)
	}
}

// prune deletes the compiled code of every module digest that keep does
// not keep: at once for those no loaded module uses, when the last one
// closes for the others. It also deletes the single shared cache of older
// versions. It returns the digests whose code it deleted.
func (c *caches) prune(keep func(digest string) bool) ([]string, error) {
	if c.dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var gone []string
	var errs []error
	for _, ent := range entries {
		name := ent.Name()
		switch {
		case hexRE.MatchString(name):
			digest := "sha256:" + name
			switch {
			case keep(digest):
				delete(c.doomed, name)
			case c.open[name] != nil:
				c.doomed[name] = true
			default:
				if err := c.remove(name); err != nil {
					errs = append(errs, err)
					continue
				}
				gone = append(gone, digest)
			}
		case strings.HasPrefix(name, "wazero-") && ent.IsDir():
			errs = append(errs, c.remove(name))
		}
	}
	return gone, errors.Join(errs...)
}

// remove deletes the directory name; the caller holds mu.
func (c *caches) remove(name string) error {
	err := os.RemoveAll(filepath.Join(c.dir, name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("deleting compiled code", "dir", name, "err", err)
		return err
	}
	return nil
}

// close closes the shared cache and any cache whose modules were not closed.
func (c *caches) close(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	if c.shared != nil {
		errs = append(errs, c.shared.Close(ctx))
	}
	for name, dc := range c.open {
		errs = append(errs, dc.cache.Close(ctx))
		delete(c.open, name)
	}
	return errors.Join(errs...)
}

// Prune deletes, from the engine's CacheDir, the compiled code of every
// module whose digest ("sha256:<hex>") keep does not keep; the code of a
// module still loaded goes when its last Module closes. Without a CacheDir
// it does nothing. It returns the digests whose code it deleted now.
func (e *Engine) Prune(keep func(digest string) bool) ([]string, error) {
	return e.caches.prune(keep)
}
