package sandbox

import (
	"context"
	"errors"
	"time"

	"github.com/contractual/contractual/internal/errs"
	"github.com/contractual/contractual/runtime/fairq"
)

// schedule waits for a CPU slot for call c of flow k and hooks c up to the
// scheduler (see Options.MaxConcurrent). parent is the caller's context,
// callCtx the call's, with its timeout. The caller releases c.slot.
func (m *Module) schedule(parent, callCtx context.Context, c *call, k fairq.Key) error {
	slot, err := m.cpu.Acquire(callCtx, k)
	if err != nil {
		return m.waitError(parent, callCtx, err, "waiting to start: the sandbox is busy")
	}
	c.slot = slot
	c.waitErr = func(err error) error { return m.waitError(parent, callCtx, err, "waiting for its turn on the CPU") }
	own := c.yield // a test's hook, if any, runs first
	c.yield = func(ctx context.Context) error {
		if own != nil {
			if err := own(ctx); err != nil {
				return err
			}
		}
		if err := slot.Yield(ctx); err != nil {
			return c.waitErr(err)
		}
		return nil
	}
	return nil
}

// outside runs fn, which blocks without running guest code (an HTTP
// request), with c's CPU slot given up, and aborts the call if it ends
// before it has a slot again.
func (c *call) outside(fn func()) {
	if c.slot == nil {
		fn()
		return
	}
	c.slot.Suspend()
	fn()
	if err := c.slot.Resume(c.ctx); err != nil {
		c.abort(c.waitErr(err))
	}
}

// waitError is the error of a call that stopped waiting for a CPU slot:
// refused as busy, canceled by its caller, or out of time.
func (m *Module) waitError(parent, callCtx context.Context, err error, doing string) error {
	switch {
	case errs.Is(err, errs.ResourceExhausted):
		return err
	case parent.Err() != nil:
		return errs.Wrap(errs.Unavailable, parent.Err(), "call canceled %s", doing)
	case errors.Is(callCtx.Err(), context.DeadlineExceeded):
		return errs.E(errs.DeadlineExceeded, "tool exceeded its %s timeout %s", m.grants.Limits.Timeout, doing)
	}
	return err
}

// sleep is the call's WASI sleep (poll_oneoff on a clock, under the
// wasi.clock grant): it gives the CPU slot up while it sleeps, as an HTTP
// request does, and ends early when the call does, and the guest with it.
func (c *call) sleep(ns int64) {
	c.outside(func() {
		t := time.NewTimer(time.Duration(ns))
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.ctx.Done():
		}
	})
	if c.ctx.Err() != nil {
		c.stop()
	}
}
