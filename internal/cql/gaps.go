package cql

import (
	"context"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// A hole in an aggregate's events, as the delivery core reads them, is a
// row it cannot see yet although a later one is there, or although the
// request says the aggregate reached a higher version: a replica that
// missed a write answered for it (the events table is read at the
// session's consistency, and a replica that took no part in the write's
// quorum catches up by repair), or a fast path's batch lacks a change. Every
// version a request names was committed (appends are conditional on the
// version before them, and hints, CDC changes and the aggregate's version
// column all come from committed appends), so the missing rows exist and
// will be visible.
//
// The core hands only the events up to the hole and saves progress only
// through them, then parks the aggregate: it asks for it again after a
// short, growing delay (gapRetryFirst doubling up to gapRetryMax) until
// the rest can be read, whatever path (a hint, a CDC change, a pass) asks
// for it meanwhile. Other aggregates are not held up.
const (
	gapRetryFirst = 50 * time.Millisecond
	gapRetryMax   = 5 * time.Second
)

// parking is a parked aggregate: the version it must reach, how many
// retries it had, and whether one is scheduled.
type parking struct {
	version int64
	tries   int
	pending bool
	since   time.Time
}

// contiguous returns the leading events of evs (in sequence order, all
// after handled) that follow handled without a hole: handled+1,
// handled+2, and so on.
func contiguous(evs []store.Event, handled int64) []store.Event {
	for i, e := range evs {
		if e.Sequence != handled+1+int64(i) {
			return evs[:i]
		}
	}
	return evs
}

// after returns the events of evs (in sequence order) with a sequence
// above handled.
func after(evs []store.Event, handled int64) []store.Event {
	for i, e := range evs {
		if e.Sequence > handled {
			return evs[i:]
		}
	}
	return nil
}

// reaches reports whether events after handled bring the aggregate up to
// version.
func reaches(evs []store.Event, handled, version int64) bool {
	if len(evs) == 0 {
		return handled >= version
	}
	return evs[len(evs)-1].Sequence >= version
}

// settleParking parks or unparks the aggregate of each due after prepare:
// one whose events stop short of its version is parked, with a retry
// scheduled unless one is pending; one that reached it is released. Only
// the delivery core calls it; ctx is its context, which ends the retries.
func (sub *subscription) settleParking(ctx context.Context, dues []due) {
	for i := range dues {
		d := &dues[i]
		id := d.req.id
		p := sub.parked[id]
		if p != nil && d.req.retry {
			p.pending = false // this is the retry it waited for
		}
		if !d.gap {
			if p != nil && d.handled+int64(len(d.events)) >= p.version {
				sub.log.Info("feed: the hole in an aggregate's events is filled", zap.Stringer("aggregate_id", id),
					zap.Int("retries", p.tries), zap.Duration("parked_for", time.Since(p.since)))
				delete(sub.parked, id)
			}
			continue
		}
		if p == nil {
			p = &parking{since: time.Now()}
			sub.parked[id] = p
			sub.log.Warn("feed: an aggregate's events have a hole; handing the events before it and retrying",
				zap.Stringer("aggregate_id", id), zap.Int64("handled", d.handled+int64(len(d.events))),
				zap.Int64("version", d.req.version))
		}
		p.version = max(p.version, d.req.version)
		if !p.pending {
			p.pending = true
			delay := min(gapRetryFirst<<min(p.tries, 10), gapRetryMax)
			p.tries++
			sub.retryLater(ctx, id, p.version, delay)
		}
	}
}

// retryLater asks the delivery core for aggregate id up to version after
// delay, unless ctx ends first.
func (sub *subscription) retryLater(ctx context.Context, id uuid.UUID, version int64, delay time.Duration) {
	time.AfterFunc(delay, func() {
		_ = sub.send(ctx, request{id: id, version: version, known: -1, retry: true})
	})
}

// oldestParking returns since when the longest-parked aggregate has
// waited, zero when none is parked. Only the delivery core calls it.
func (sub *subscription) oldestParking() time.Time {
	var oldest time.Time
	for _, p := range sub.parked {
		if oldest.IsZero() || p.since.Before(oldest) {
			oldest = p.since
		}
	}
	return oldest
}
