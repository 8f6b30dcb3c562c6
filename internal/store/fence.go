package store

import (
	"context"
	"errors"
	"fmt"
)

// ErrFenced is returned for a write made on behalf of a lease whose epoch
// is not the current one: another holder has taken the lease since (see
// Fence). Nothing of the refused write is stored. The worker that gets it
// must stop at once, as when it loses its lease; it is not a failure.
var ErrFenced = errors.New("store: fenced: the lease was taken by another holder")

// Fence names the lease a worker writes on behalf of, and the epoch its
// holder got when it took it. Every take of a lease bumps its epoch
// (renewals do not), so the holder of the highest epoch is the only one
// whose fenced writes a store accepts: a holder whose lease lapsed (a GC
// pause, a partition) changes nothing once its successor took over, even
// if its writes reach the store late.
//
// A fence travels in the context of the writes (WithFence); writes whose
// context carries none are not fenced (an operator's request, a test).
// Each backend documents which writes it fences and how.
type Fence struct {
	Lease string // the lease's name, which is the worker's (its consumer name on the feed)
	Epoch int64  // 1 for the first take, one more for each take after
	// Shard is the part of the aggregate-id space the lease covers: a
	// feed subscribed with this fence hands only that shard's events. The
	// zero value, like Whole, is everything.
	Shard Shard
}

// String shows the fence as lease@epoch.
func (f Fence) String() string { return fmt.Sprintf("%s@%d", f.Lease, f.Epoch) }

type fenceKey struct{}

// WithFence returns ctx carrying f: writes made with it are conditional on
// f being the lease's current epoch.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceOf returns the fence ctx carries, and whether it carries one.
func FenceOf(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	return f, ok && f.Lease != ""
}

// Fenced wraps ErrFenced with what was refused and why.
func Fenced(what string, f Fence, current int64) error {
	return fmt.Errorf("%w: %s under %s, the lease is at epoch %d", ErrFenced, what, f, current)
}
