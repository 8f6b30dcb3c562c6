package cql

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// maxAttempts bounds the read-project-write rounds for one aggregate. A
// round is lost only by a conditional write (a row an earlier release
// wrote, see conditionalRow) that another instance moved on or that timed
// out; the next round reads serially, so a handful always suffices. The
// bound only turns a bug (a condition that can never hold) into an error
// instead of a spin.
const maxAttempts = 16

// Apply brings the rows of the events' aggregates up to those events. It is
// a store.Handler: the projector's feed calls it. Events of aggregate types
// without views are skipped. For each aggregate it reads the row, applies
// the events with readmodel's pure functions (which ignore those at or
// below the row's version, so a redelivered batch is harmless), and writes
// the whole row as a plain write whose timestamp is its version
// (versionStamp): whatever instance writes whatever version in whatever
// order, each cell keeps the greatest version's value, so two instances
// applying the same events at once (during a failover), or a stale batch
// arriving late, never move a row back, on any replica. A row an earlier
// release wrote with lightweight transactions keeps being written so
// (conditionalRow).
//
// So a batch costs one Paxos round, the fence check, and per aggregate
// one read and one write (for an order, one unlogged batch of its row and
// its row in its customer's list), however many instances write.
//
// Aggregates are independent, so Apply works on several at once, and
// Cassandra has no transaction across them: on error some rows may be
// written and others not. Delivering the batch again is then the way to
// finish, since what is written counts as applied. Apply returns an error
// wrapping readmodel.ErrGap when an event skips past its row's version+1
// (the feed never leaves such a gap, so it reports a bug), and an error
// when an event does not decode or cannot start its row, or Cassandra
// fails; the row of such an event is left as it was.
//
// When it returns nil, every row it was given an event for is at least at
// that event's version, and the readers watching those rows are woken: also for
// rows another instance wrote first, so that a read-your-writes wait is
// woken by whichever Views learns of the event.
func (v *Views) Apply(ctx context.Context, events []store.Event) error {
	groups := group(events)
	if len(groups) == 0 {
		return nil
	}
	// One fence check for the batch (see checkFence), the batch's one
	// lightweight transaction: a projector whose lease was taken writes no
	// row more; the rows are version-stamped, so what one that lapsed
	// after its check still writes is never older than what is there.
	if err := checkFence(ctx, v.session.Session, v.consistency, "project a batch"); err != nil {
		return fmt.Errorf("scylla: views: %w", err)
	}
	var (
		mu   sync.Mutex
		done []uuid.UUID // the aggregates brought up to their events
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for _, a := range groups {
		g.Go(func() error {
			var err error
			switch a.typ {
			case aggregate.OrderType:
				err = project(gctx, v, orderTable{v}, a.id, a.events)
			case aggregate.CustomerType:
				err = project(gctx, v, customerTable{v}, a.id, a.events)
			}
			if err != nil {
				return fmt.Errorf("scylla: views: %s %s: %w", a.typ, a.id, err)
			}
			mu.Lock()
			done = append(done, a.id)
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	v.Notify(done...)
	return err
}

// aggregateEvents are the events of one aggregate in one Apply call.
type aggregateEvents struct {
	typ    string
	id     uuid.UUID
	events []store.Event
}

// group splits events by aggregate, keeping those of projected types only,
// and sorts each aggregate's events by sequence. The feed keeps them in
// order anyway; sorting keeps a redelivered event that a batch carries
// after newer ones from looking like a gap.
func group(events []store.Event) []*aggregateEvents {
	type key struct {
		typ string
		id  uuid.UUID
	}
	byKey := map[key]*aggregateEvents{}
	var out []*aggregateEvents
	for _, e := range events {
		if e.AggregateType != aggregate.OrderType && e.AggregateType != aggregate.CustomerType {
			continue
		}
		k := key{e.AggregateType, e.AggregateID}
		a, ok := byKey[k]
		if !ok {
			a = &aggregateEvents{typ: e.AggregateType, id: e.AggregateID}
			byKey[k] = a
			out = append(out, a)
		}
		a.events = append(a.events, e)
	}
	for _, a := range out {
		slices.SortStableFunc(a.events, func(x, y store.Event) int { return cmp.Compare(x.Sequence, y.Sequence) })
	}
	return out
}

// project runs the read-apply-write rounds for one aggregate's events,
// sorted by sequence, until the row holds them: one round, but for a row
// whose conditional write lost or timed out.
func project[R any](ctx context.Context, v *Views, t table[R], id uuid.UUID, events []store.Event) error {
	if len(events) == 1 && events[0].Sequence == 1 && !v.conditionalRows {
		// An aggregate's first event alone needs no read: the row is the
		// projection of that event, and a row that exists already holds
		// it (a row is at version 1 or later), so this write, at
		// versionStamp(1), changes nothing there; a row an earlier
		// release wrote with lightweight transactions has stamps far
		// above it. A creation is most of what the feed brings, so this
		// saves a read per new aggregate.
		var r R
		changed, err := t.apply(&r, events[0])
		if err != nil || !changed {
			return err
		}
		if err := t.write(ctx, r); err != nil {
			return fmt.Errorf("write version 1: %w", err)
		}
		return nil
	}
	c := v.consistency
	for attempt := 1; ; attempt++ {
		r, stamp, err := t.read(ctx, id, c)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		base := t.version(r)
		changed, err := applyAll(t, &r, events)
		if errors.Is(err, readmodel.ErrGap) && c != v.serial {
			// A read below the serial level may miss a write that another
			// instance committed (at One, or in another datacenter): make
			// sure the row really is behind before reporting a bug.
			v.log.Info("read model row behind an event; re-reading it serially",
				zap.Stringer("aggregate_id", id), zap.Int64("version", base), zap.Error(err))
			c = v.serial
			continue
		}
		if err != nil {
			return err
		}
		if !changed {
			// Everything was applied before. If the last event is the
			// row's own version, this may be the feed's repeat after a
			// crash between the row's write and what derives from it, so
			// write that again: it is idempotent.
			if events[len(events)-1].Sequence == t.version(r) {
				return t.written(ctx, r)
			}
			return nil
		}
		if !v.conditionalRows && !conditionalRow(stamp) {
			// The row the events were applied to may be stale (another
			// instance wrote a later version since the read): then this
			// write of an earlier version loses to it cell by cell, which
			// is what it should do. It cannot lose to an earlier one.
			if err := t.write(ctx, r); err != nil {
				return fmt.Errorf("write version %d over %d: %w", t.version(r), base, err)
			}
			return nil
		}
		// A row an earlier release wrote with lightweight transactions:
		// the same guard as then. The first read may be stale by a write
		// in flight; the condition catches that. After a lost round the
		// re-read is linearizable (a serial read completes any Paxos
		// round in progress), so the next round starts from the row that
		// won.
		ok, err := t.writeIf(ctx, r, base)
		switch {
		case err == nil && ok:
			return t.written(ctx, r)
		case err == nil:
			v.log.Debug("read model row moved on under a write; retrying",
				zap.Stringer("aggregate_id", id), zap.Int64("from_version", base), zap.Int("attempt", attempt))
		case casUncertain(err) && ctx.Err() == nil:
			// The write may or may not have landed. The serial re-read
			// settles it: the next round finds the events applied, or
			// writes them again on the row as it is.
			v.log.Info("read model conditional write timed out; settling it with a serial read",
				zap.Stringer("aggregate_id", id), zap.Int64("from_version", base), zap.Error(err))
		default:
			return fmt.Errorf("write version %d over %d: %w", t.version(r), base, err)
		}
		if attempt == maxAttempts {
			return fmt.Errorf("row moved on, or the write timed out, in each of %d attempts to write version %d", attempt, t.version(r))
		}
		c = v.serial
	}
}

// casUncertain reports whether a conditional write failed without saying
// whether it was applied: the server's write timeout (for a CAS write, also
// Paxos contention), or no answer within the client's timeout.
func casUncertain(err error) bool {
	var wt *gocql.RequestErrWriteTimeout
	return errors.As(err, &wt) || errors.Is(err, gocql.ErrTimeoutNoResponse)
}

// applyAll applies events to r in order and reports whether r changed. On
// error r may hold some of the events; the caller then drops it.
func applyAll[R any](t table[R], r *R, events []store.Event) (bool, error) {
	changed := false
	for _, e := range events {
		c, err := t.apply(r, e)
		if err != nil {
			return false, fmt.Errorf("event %s #%d: %w", e.ID, e.Sequence, err)
		}
		changed = changed || c
	}
	return changed, nil
}
