package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// Errors of the operator's dead-letter commands.
var (
	// ErrReplayFailed is returned when a dead letter failed permanently
	// again; it stays in the ledger with the new error.
	ErrReplayFailed = errors.New("relay: replay failed")
	// ErrBrokerUnavailable is returned when Kafka could not be reached
	// within the replay's time; nothing changed.
	ErrBrokerUnavailable = errors.New("relay: broker unavailable")
)

var errRelayOff = fmt.Errorf("%w: the relay is off (no Kafka brokers configured)", ErrBrokerUnavailable)

// replayTimeout bounds how long an operator's replay retries a broker that
// does not answer, since someone is waiting for it.
const replayTimeout = 15 * time.Second

// List returns up to limit dead letters after position after.
func (r *Relay) List(ctx context.Context, after int64, limit int) ([]DeadLetter, error) {
	return r.ledger.List(ctx, after, limit)
}

// Inspect returns a dead letter and the event it holds back.
func (r *Relay) Inspect(ctx context.Context, position int64) (DeadLetter, store.Event, error) {
	l, err := r.ledger.Get(ctx, position)
	if err != nil {
		return l, store.Event{}, err
	}
	e, err := r.event(ctx, l)
	return l, e, err
}

// Replay publishes the dead letters of position's aggregate in order: the
// failed one first, then the events parked behind it. It stops at the first
// that fails again, which stays with its new error (ErrReplayFailed). It
// returns how many it published; once none is left, the aggregate's new
// events flow again.
func (r *Relay) Replay(ctx context.Context, position int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, err := r.ledger.Get(ctx, position)
	if err != nil {
		return 0, err
	}
	return r.release(ctx, l.AggregateID)
}

// Discard drops the dead letter at position, which is then never published,
// and replays what is left of its aggregate, as Replay does.
func (r *Relay) Discard(ctx context.Context, position int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pub == nil {
		return 0, errRelayOff
	}
	l, err := r.ledger.Get(ctx, position)
	if err != nil {
		return 0, err
	}
	if err := r.ledger.Remove(ctx, position); err != nil {
		return 0, err
	}
	r.metrics.discarded()
	return r.release(ctx, l.AggregateID)
}

// release publishes an aggregate's dead letters in sequence order and
// unblocks the aggregate when none is left. r.mu is held.
func (r *Relay) release(ctx context.Context, aggregateID uuid.UUID) (int, error) {
	if r.pub == nil {
		return 0, errRelayOff
	}
	letters, err := r.ledger.OfAggregate(ctx, aggregateID)
	if err != nil {
		return 0, err
	}
	published := 0
	for _, l := range letters {
		e, err := r.event(ctx, l)
		if err != nil {
			return published, err
		}
		pctx, cancel := context.WithTimeout(ctx, replayTimeout)
		msg := r.message(e)
		err = r.publish(pctx, []Message{msg})
		cancel()
		switch {
		case err == nil:
			if err := r.ledger.Remove(ctx, l.Position); err != nil {
				return published, err
			}
			published++
			r.metrics.published([]Message{msg})
			continue
		case errors.Is(err, ErrPermanent):
			now := time.Now().UTC()
			if l.FirstFailedAt.IsZero() {
				l.FirstFailedAt = now
			}
			l.State, l.Error, l.Attempts, l.LastFailedAt = Failed, err.Error(), l.Attempts+1, now
			if uerr := r.ledger.Update(ctx, l); uerr != nil {
				return published, uerr
			}
			return published, fmt.Errorf("%w: event %s (position %d): %v", ErrReplayFailed, l.EventID, l.Position, err)
		case ctx.Err() != nil:
			return published, ctx.Err()
		default:
			return published, fmt.Errorf("%w: %v", ErrBrokerUnavailable, err)
		}
	}
	delete(r.blocked, aggregateID)
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
