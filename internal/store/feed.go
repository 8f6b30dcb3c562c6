package store

import (
	"context"
	"time"
)

// Handler acts on a batch of committed events for one consumer of a Feed.
// It returns nil once it has acted on every event of the batch (published
// it, projected it, …); only then may the feed record the batch as handled.
// An error stops the subscription.
type Handler func(ctx context.Context, events []Event) error

// Feed is the change feed: it pushes every committed event to named
// consumers, each with its own durable progress kept by the backend.
//
// What every backend guarantees to a Handler, whatever its fast path, a
// time window, a timeout or a crash did:
//   - Completeness: every committed event is handed to it, eventually, at
//     least once. Where a fast path (a CDC log, hints) can miss an event, a
//     slower path (a reconciliation pass over the events table) finds it.
//   - Order per aggregate, without gaps: within a batch an aggregate's
//     events are in sequence order, and the first time a subscription hands
//     event n of an aggregate, every event before it was in a batch whose
//     Handler call returned nil (in this subscription, or in an earlier one
//     under the same consumer name).
//   - Redelivery: events already handled may be handed again (after an
//     error, a restart or a failover, or because two paths found the same
//     event). A Handler must be idempotent per event.
//   - Events come upcast to their current schema, and carry Position when
//     the backend has a global commit order.
type Feed interface {
	// Subscribe hands the feed to h under the consumer's progress, starting
	// after what the consumer has handled before, and keeps handing new
	// events as they are committed. It calls h from one goroutine at a
	// time. It returns nil when ctx ends, and an error when h fails (wrapped)
	// or the backend does. Progress is saved only past batches h returned
	// nil for; before returning nil on a ctx that ended, Subscribe saves it
	// through the last such batch.
	//
	// Two subscriptions with the same consumer name on the same shard at
	// once are not supported (Leases elect one); both would see every
	// event, which idempotent handlers survive, only wastefully. On an
	// engine split into shards (Sharded), a subscription whose context
	// carries a fence of a shard (WithFence, Fence.Shard) hands only that
	// shard's events, under the shard's own state; the subscriptions of
	// every shard together hand every event.
	Subscribe(ctx context.Context, consumer string, h Handler) error

	// Lag says how far the consumer is behind the committed events. It
	// reads the saved progress when no subscription of this process runs
	// the consumer, so it is right before the first batch too.
	Lag(ctx context.Context, consumer string) (Lag, error)
}

// Lag is how far a consumer is behind the feed.
type Lag struct {
	// Known is false when the backend cannot count what the consumer has
	// not handled yet (then Events and Age are zero), for example a CQL
	// store before its first reconciliation pass.
	Known bool
	// Events is the number of committed events the consumer has not
	// handled.
	Events int64
	// Age is how long the oldest of them has been committed; 0 when the
	// consumer is caught up.
	Age time.Duration
	// At is when the figures were measured: now on a backend with a global
	// commit order, the last reconciliation pass on a CQL store.
	At time.Time
}

// Leases elect one holder per named lease among the instances that share a
// store, so that each worker (the relay, the projector) runs on exactly one
// instance while the others stand by.
//
// A lease taken at time t (as the holder measured it before the request
// went out) is the holder's until t+ttl unless renewed; after that anyone
// may take it. A holder must stop acting on a lease once its own deadline
// has passed without a renewal, whether or not anybody else took it: that
// is what keeps a holder that paused (a GC pause, a stopped process, a
// partition) from acting beside its successor.
type Leases interface {
	// Acquire takes the lease for holder when nobody holds it (or the
	// holding expired), renews it when holder already holds it, and
	// returns the lease's epoch when holder holds it now, for ttl from the
	// call, 0 when it does not. A take bumps the epoch by one (the first
	// take gets 1); a renewal keeps it. The epoch never goes back, so a
	// Fence of it lets the store refuse the writes of every earlier holder.
	Acquire(ctx context.Context, name, holder string, ttl time.Duration) (epoch int64, err error)

	// Release gives the lease up when holder holds it, so a standby can
	// take over at once rather than after the ttl. Releasing a lease one
	// does not hold is a no-op.
	Release(ctx context.Context, name, holder string) error

	// Holder returns who holds the lease, "" when nobody does.
	Holder(ctx context.Context, name string) (string, error)
}

// Log is the whole event history read in bulk, in the order the store
// keeps it: what a rebuild of the read models replays.
type Log interface {
	// Replay hands h, in batches, every event committed after mark (0: from
	// the first event) and before the call, and returns the mark to pass
	// next time for only what is committed after. Within a batch, and from
	// one batch to the next, each aggregate's events are in sequence order
	// and without gaps. A backend without a global commit order replays
	// everything each time and returns mark 0. It returns h's error
	// (wrapped) as soon as h fails, and ctx's error when ctx ends.
	Replay(ctx context.Context, after int64, h Handler) (mark int64, err error)

	// Count returns how many events the store holds: exactly, or an
	// estimate where counting exactly costs a full scan. It sizes a
	// rebuild's progress bar.
	Count(ctx context.Context) (int64, error)
}
