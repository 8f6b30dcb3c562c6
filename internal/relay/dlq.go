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

// replayTimeout bounds a whole replay or discard, waiting for the relay's
// turn included, since someone is waiting for it (and the HTTP server's
// write timeout is 30 s).
const replayTimeout = 20 * time.Second

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
	ctx, cancel, err := r.operatorTurn(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	l, err := r.ledger.Get(ctx, position)
	if err != nil {
		return 0, err
	}
	return r.releaseAggregate(ctx, l.AggregateID)
}

// Discard drops the dead letter at position, which is then never published,
// and replays what is left of its aggregate, as Replay does.
func (r *Relay) Discard(ctx context.Context, position int64) (int, error) {
	if r.pub == nil {
		return 0, errRelayOff
	}
	ctx, cancel, err := r.operatorTurn(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	l, err := r.ledger.Get(ctx, position)
	if err != nil {
		return 0, err
	}
	if err := r.ledger.Remove(ctx, position); err != nil {
		return 0, err
	}
	r.metrics.discarded()
	return r.releaseAggregate(ctx, l.AggregateID)
}

// operatorTurn bounds an operator's command by replayTimeout and takes the
// relay's turn within it. The returned cancel also gives the turn back.
func (r *Relay) operatorTurn(ctx context.Context) (context.Context, func(), error) {
	ctx, cancel := context.WithTimeout(ctx, replayTimeout)
	if err := r.take(ctx); err != nil {
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, fmt.Errorf("%w: the relay is busy retrying a publish (is Kafka down?)", ErrBrokerUnavailable)
		}
		return nil, nil, err
	}
	return ctx, func() { r.release(); cancel() }, nil
}

// releaseAggregate publishes an aggregate's dead letters in sequence order
// and unblocks the aggregate when none is left. The caller has the turn.
func (r *Relay) releaseAggregate(ctx context.Context, aggregateID uuid.UUID) (int, error) {
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
		msg := r.message(e)
		err = r.publish(ctx, []Message{msg})
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
		default: // Kafka did not take it before the deadline
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
