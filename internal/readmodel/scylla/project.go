package scylla

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// maxAttempts bounds the read-project-write rounds for one aggregate. Each
// lost round means another projector moved the row on, so a handful always
// suffices; the bound only turns a bug (a condition that can never hold)
// into an error instead of a spin.
const maxAttempts = 16

// Project brings the rows of the events' aggregates up to those events.
// Events of aggregate types without views are skipped. It may be given
// events in any grouping, any number of times, with gaps: for each
// aggregate it reads the row, applies the events with readmodel's pure
// functions (which ignore those at or below the row's version), loads from
// History whatever lies between the row and an event that skips ahead, and
// writes the row on condition that nobody moved it meanwhile, trying again
// on top of the newer row if somebody did.
//
// Aggregates are independent, so Project works on several at once and
// Cassandra has no transaction across them: on error some rows may be
// written and others not. Calling Project again with the same events is
// then the way to finish, since what is written counts as applied. It
// returns an error when an event does not decode or cannot start its row,
// History fails or ends before an event, or Cassandra fails.
//
// When it returns, every row it was given an event for is at least at that
// event's version (unless an error says otherwise), and readers waiting on
// Changed are woken: also for rows another projector wrote first, so that a
// read-your-writes wait is woken by whichever Views learns of the event.
func (v *Views) Project(ctx context.Context, events []store.Event) error {
	groups := group(events)
	if len(groups) == 0 {
		return nil
	}
	var done atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(v.concurrency)
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
				return fmt.Errorf("readmodel/scylla: %s %s: %w", a.typ, a.id, err)
			}
			done.Store(true)
			return nil
		})
	}
	err := g.Wait()
	if done.Load() {
		v.Notify()
	}
	return err
}

// aggregateEvents are the events of one aggregate in one Project call.
type aggregateEvents struct {
	typ    string
	id     uuid.UUID
	events []store.Event
}

// group splits events by aggregate, keeping those of projected types only,
// and sorts each aggregate's events by sequence: a feed keeps them in order
// anyway, and sorting spares a needless trip to History when a caller's
// batch does not.
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
// sorted by sequence, until the row holds them.
func project[R any](ctx context.Context, v *Views, t table[R], id uuid.UUID, events []store.Event) error {
	// The first read may be stale by a write in flight; the condition
	// catches that. After a lost round the re-read is linearizable (a
	// serial read completes any Paxos round in progress), so the next
	// round starts from the row that won.
	c := v.consistency
	for attempt := 1; ; attempt++ {
		r, err := t.read(ctx, id, c)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		base := t.version(r)
		changed, err := applyAll(ctx, v, t, &r, id, events)
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
		ok, err := t.write(ctx, r, base)
		switch {
		case err == nil && ok:
			return t.written(ctx, r)
		case err == nil:
			v.log.Debug("read model row moved on under a write; retrying",
				zap.Stringer("aggregate_id", id), zap.Int64("from_version", base), zap.Int("attempt", attempt))
		case uncertain(err) && ctx.Err() == nil:
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

// uncertain reports whether a conditional write failed without saying
// whether it was applied: the server's write timeout (for a CAS write, also
// Paxos contention), or no answer within the client's timeout.
func uncertain(err error) bool {
	var wt *gocql.RequestErrWriteTimeout
	return errors.As(err, &wt) || errors.Is(err, gocql.ErrTimeoutNoResponse)
}

// applyAll applies events to r in order, healing a gap from History when
// one skips past r's version. It reports whether r changed.
func applyAll[R any](ctx context.Context, v *Views, t table[R], r *R, id uuid.UUID, events []store.Event) (bool, error) {
	changed := false
	for _, e := range events {
		c, err := t.apply(r, e)
		if errors.Is(err, readmodel.ErrGap) {
			c, err = heal(ctx, v, t, r, id, e)
		}
		if err != nil {
			return false, fmt.Errorf("event %s #%d at position %d: %w", e.ID, e.Sequence, e.Position, err)
		}
		changed = changed || c
	}
	return changed, nil
}

// heal applies to r the aggregate's events after r's version from History,
// which must reach at least e, the event that found the gap. It applies all
// History has, past e too: they are the aggregate's true later events, and
// when the feed delivers them they count as applied.
func heal[R any](ctx context.Context, v *Views, t table[R], r *R, id uuid.UUID, e store.Event) (bool, error) {
	from := t.version(*r)
	missing, err := v.history.Load(ctx, id, from)
	if err != nil {
		return false, fmt.Errorf("heal gap after version %d: load history: %w", from, err)
	}
	changed := false
	for _, h := range missing {
		c, err := t.apply(r, h)
		if err != nil {
			return false, fmt.Errorf("heal gap after version %d: history event %s #%d: %w", from, h.ID, h.Sequence, err)
		}
		changed = changed || c
	}
	if to := t.version(*r); to < e.Sequence {
		return false, fmt.Errorf("%w: history of %s ends at version %d, before sequence %d", readmodel.ErrGap, id, to, e.Sequence)
	}
	v.log.Info("healed a gap in the read model's feed from the event store",
		zap.String("aggregate_type", e.AggregateType), zap.Stringer("aggregate_id", id),
		zap.Int64("from_version", from), zap.Int64("gap_event", e.Sequence), zap.Int64("to_version", t.version(*r)))
	return changed, nil
}
