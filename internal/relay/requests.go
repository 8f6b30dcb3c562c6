package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// serveRequests carries out the operators' pending requests until ctx
// ends: at once when one is made on this instance, and by looking in the
// ledger every RequestPoll for those made on other instances. It returns
// nil when ctx ends; a failure leaves the request queued, to be tried
// again at the next look.
func (r *Relay) serveRequests(ctx context.Context) error {
	tick := time.NewTicker(r.cfg.RequestPoll)
	defer tick.Stop()
	for {
		r.carryOutRequests(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-tick.C:
		}
	}
}

// carryOutRequests carries out the pending requests in position order.
func (r *Relay) carryOutRequests(ctx context.Context) {
	reqs, err := r.ledger.Requests(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("relay: read the operators' requests", zap.Error(err))
		}
		return
	}
	for _, q := range reqs {
		if err := r.carryOut(ctx, q); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("relay: request not carried out; it stays queued", zap.String("op", q.Op),
				zap.Int64("dead_letter", q.Position), zap.Error(err))
		}
	}
}

// carryOut carries out one request under the turn and records its outcome.
// It gives up after replayTimeout, so that a request waiting for Kafka does
// not keep the feed's batches from their turn for ever; it is tried again
// later. An error means the request stays pending.
func (r *Relay) carryOut(ctx context.Context, q Request) error {
	ctx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	if err := r.take(ctx); err != nil {
		return fmt.Errorf("wait for the relay's turn: %w", err)
	}
	defer r.release()
	if err := r.loadBlocked(ctx); err != nil {
		return err
	}
	l, err := r.ledger.Get(ctx, q.Position)
	switch {
	case errors.Is(err, ErrNotFound):
		q.State = RequestMissing
		return r.finish(ctx, q)
	case err != nil:
		return err
	}
	var skip int64
	if q.Op == OpDiscard {
		skip = l.Position
	}
	n, err := r.releaseAggregate(ctx, l.AggregateID, skip)
	q.Published = n
	var failed *replayError
	switch {
	case errors.As(err, &failed):
		q.State, q.Error = RequestFailed, failed.Error()
	case err != nil:
		return err
	default:
		q.State = RequestDone
	}
	if q.Op == OpDiscard {
		// Last, so that a discard cut short is carried out again whole.
		if err := r.ledger.Remove(context.WithoutCancel(ctx), l.Position); err != nil {
			return fmt.Errorf("relay: discard dead letter %d: %w", l.Position, err)
		}
		r.metrics.discarded()
		r.log.Info("discarded dead letter", zap.Int64("dead_letter", l.Position), zap.Stringer("event_id", l.EventID))
	}
	if q.State == RequestDone {
		delete(r.blocked, l.AggregateID)
	}
	return r.finish(ctx, q)
}

// finish records q's outcome, even if ctx ended meanwhile: what was
// published is done.
func (r *Relay) finish(ctx context.Context, q Request) error {
	q.FinishedAt = r.now()
	if err := r.ledger.Finish(context.WithoutCancel(ctx), q); err != nil {
		return fmt.Errorf("relay: finish the %s of dead letter %d: %w", q.Op, q.Position, err)
	}
	return nil
}

// replayError is a dead letter that failed permanently again in a replay.
type replayError struct {
	letter DeadLetter
	err    error
}

func (e *replayError) Error() string {
	return fmt.Sprintf("event %s (dead letter %d): %v", e.letter.EventID, e.letter.Position, e.err)
}

func (e *replayError) Unwrap() error { return e.err }

// releaseAggregate publishes an aggregate's dead letters, but the one at
// skip, in sequence order, removing each once Kafka took it. It stops at
// the first that fails permanently again, which keeps the new error (a
// *replayError), and at a transient failure (ctx's deadline). It returns
// how many it published. The caller has the turn.
func (r *Relay) releaseAggregate(ctx context.Context, aggregateID uuid.UUID, skip int64) (int, error) {
	letters, err := r.ledger.OfAggregate(ctx, aggregateID)
	if err != nil {
		return 0, err
	}
	published := 0
	for _, l := range letters {
		if l.Position == skip {
			continue
		}
		e, err := r.event(ctx, l)
		if err != nil {
			return published, err
		}
		msg := r.message(e)
		err = r.publish(ctx, []Message{msg})
		switch {
		case err == nil:
			if err := r.ledger.Remove(context.WithoutCancel(ctx), l.Position); err != nil {
				return published, fmt.Errorf("relay: remove published dead letter %d: %w", l.Position, err)
			}
			published++
			r.metrics.published([]Message{msg})
		case errors.Is(err, ErrPermanent):
			now := r.now()
			if l.FirstFailedAt.IsZero() {
				l.FirstFailedAt = now
			}
			l.State, l.Error, l.Attempts, l.LastFailedAt = Failed, err.Error(), l.Attempts+1, now
			if uerr := r.ledger.Update(context.WithoutCancel(ctx), l); uerr != nil {
				return published, fmt.Errorf("relay: update dead letter %d: %w", l.Position, uerr)
			}
			r.blocked[aggregateID] = l.Sequence
			return published, &replayError{letter: l, err: err}
		default:
			return published, fmt.Errorf("relay: publish dead letter %d: %w", l.Position, err)
		}
	}
	return published, nil
}

// event loads the event a dead letter holds back from the store.
func (r *Relay) event(ctx context.Context, l DeadLetter) (store.Event, error) {
	events, err := r.history.Load(ctx, l.AggregateID, l.Sequence-1)
	if err != nil {
		return store.Event{}, fmt.Errorf("relay: load event %s: %w", l.EventID, err)
	}
	if len(events) == 0 || events[0].ID != l.EventID {
		return store.Event{}, fmt.Errorf("relay: dead letter %d: event %s is not in the store", l.Position, l.EventID)
	}
	e := events[0]
	e.Position = l.Position
	return e, nil
}
