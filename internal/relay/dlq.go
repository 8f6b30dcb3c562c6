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
	// ErrBrokerUnavailable is returned when the command was not carried
	// out in time: Kafka could not be reached, or no instance is the
	// active relay. Its request stays queued.
	ErrBrokerUnavailable = errors.New("relay: broker unavailable")
)

var errRelayOff = fmt.Errorf("%w: the relay is off (no Kafka brokers configured)", ErrBrokerUnavailable)

// replayTimeout bounds a whole replay or discard as the operator waits for
// it (the HTTP server's write timeout is 30 s), and each attempt of the
// active relay to carry one out.
const replayTimeout = 20 * time.Second

// List returns up to limit dead letters after position after, from the
// ledger; it works on every instance.
func (r *Relay) List(ctx context.Context, after int64, limit int) ([]DeadLetter, error) {
	return r.ledger.List(ctx, after, limit)
}

// Inspect returns a dead letter and the event it holds back, or an error
// wrapping ErrNotFound; it works on every instance.
func (r *Relay) Inspect(ctx context.Context, position int64) (DeadLetter, store.Event, error) {
	l, err := r.ledger.Get(ctx, position)
	if err != nil {
		return l, store.Event{}, err
	}
	e, err := r.event(ctx, l)
	return l, e, err
}

// Replay has the active relay publish the dead letters of position's
// aggregate in order: the failed one first, then the events parked behind
// it. It may be called on any instance: it queues the request in the
// ledger and waits up to 20 s for the outcome. It returns how many events
// were published, and once none is left the aggregate's new events flow
// again. Errors: ErrNotFound (wrapped) for an unknown dead letter;
// ErrReplayFailed when one failed permanently again (it keeps the new
// error, and the request is finished); ErrBrokerUnavailable when nothing
// was done in time, because Kafka is down or no instance is the active
// relay: the request stays queued, and calling again waits for it again.
func (r *Relay) Replay(ctx context.Context, position int64) (int, error) {
	return r.command(ctx, position, OpReplay)
}

// Discard has the active relay drop the dead letter at position, which is
// then never published, and replay what is left of its aggregate, as
// Replay does, with the same errors.
func (r *Relay) Discard(ctx context.Context, position int64) (int, error) {
	return r.command(ctx, position, OpDiscard)
}

// command queues op on the dead letter at position and waits for its
// outcome. It never publishes itself: only the active relay does, under
// its turn, so that the aggregate's order and the relay's blocked set
// hold.
func (r *Relay) command(ctx context.Context, position int64, op string) (int, error) {
	if r.pub == nil {
		return 0, errRelayOff
	}
	ctx, cancel := context.WithTimeout(ctx, replayTimeout)
	defer cancel()
	q, err := r.ledger.Request(ctx, Request{Position: position, ID: uuid.New(), Op: op, RequestedAt: r.now()})
	if err != nil {
		return 0, r.unfinished(ctx, op, position, err)
	}
	if q.Op != op {
		return 0, fmt.Errorf("%w: a %s of dead letter %d is queued already; it stays queued and the active relay "+
			"carries it out when it can; ask again once it is done", ErrBrokerUnavailable, q.Op, position)
	}
	// The local relays, if they serve, need not wait for their next look.
	r.Wake()
	if r.requested != nil {
		r.requested()
	}
	tick := time.NewTicker(r.cfg.RequestWait)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0, r.unfinished(ctx, op, position, ctx.Err())
		case <-tick.C:
		}
		got, err := r.ledger.RequestAt(ctx, position)
		switch {
		case err != nil && ctx.Err() != nil:
			return 0, r.unfinished(ctx, op, position, err)
		case err != nil:
			return 0, err
		case got.ID != q.ID:
			// Ours finished and a newer one replaced it: its outcome is
			// lost, and the newer one is someone else's to wait for.
			return 0, fmt.Errorf("relay: the %s of dead letter %d finished and was followed by another request; "+
				"list the dead letters to see the outcome", op, position)
		}
		switch got.State {
		case RequestDone:
			return got.Published, nil
		case RequestFailed:
			return got.Published, fmt.Errorf("%w: %s", ErrReplayFailed, got.Error)
		case RequestMissing:
			return 0, fmt.Errorf("relay: dead letter %d: %w", position, ErrNotFound)
		}
	}
}

// unfinished is the error of a command that did not finish: the 20 s are
// up (ErrBrokerUnavailable, the request stays queued), or the caller gave
// up, or the ledger failed.
func (r *Relay) unfinished(ctx context.Context, op string, position int64, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: the %s of dead letter %d was not carried out within %s (Kafka is down, or no instance "+
			"is the active relay); the request stays queued and the active relay carries it out when it can",
			ErrBrokerUnavailable, op, position, replayTimeout)
	}
	return err
}
