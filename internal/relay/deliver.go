package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// Handle publishes a batch of the feed: it is the relay's store.Handler.
// It returns nil once every event is acknowledged by Kafka or recorded as
// a dead letter (failed, or parked behind an earlier dead letter of its
// aggregate). Transient failures are retried until ctx ends; it then
// returns ctx's error and the feed hands the batch again later.
//
// Handing an event again is harmless: a published event is published
// again (consumers dedupe on ce_id), and a dead-lettered one is parked
// again under the same id, which keeps the recorded letter.
func (r *Relay) Handle(ctx context.Context, events []store.Event) error {
	if r.pub == nil {
		return errRelayOff
	}
	if err := r.take(ctx); err != nil {
		return err
	}
	defer r.release()
	if err := r.loadBlocked(ctx); err != nil {
		return err
	}
	events = r.published(events)
	for i := range events {
		events[i].Position = letterPosition(events[i])
	}
	letters, err := r.deliver(ctx, events)
	if err != nil {
		return err
	}
	// Everything is acknowledged or dead-lettered: record it even if ctx
	// ended meanwhile, so that the work is not lost.
	if err := r.record(ctx, letters); err != nil {
		return fmt.Errorf("relay: record %d dead letters: %w", len(letters), err)
	}
	for _, l := range letters {
		if first, ok := r.blocked[l.AggregateID]; !ok || l.Sequence < first {
			r.blocked[l.AggregateID] = l.Sequence
		}
	}
	r.metrics.deadLettered(letters)
	return nil
}

// record stores letters in the ledger. While the ledger's storage fails
// (store.ErrUnavailable) it tries again with capped backoff, holding the
// batch rather than failing it: a failed batch is handed again and
// published again, and a supervisor restarting the relay at once would
// make every restart a batch of duplicates. It gives up when ctx ends.
func (r *Relay) record(ctx context.Context, letters []DeadLetter) error {
	wait := r.cfg.RetryInitial
	for try := 1; ; try++ {
		err := r.ledger.Record(context.WithoutCancel(ctx), letters)
		if err == nil || !errors.Is(err, store.ErrUnavailable) {
			if err == nil && try > 1 {
				r.log.Info("relay: dead letters recorded again", zap.Int("tries", try))
			}
			return err
		}
		if try == 1 {
			r.log.Warn("relay: cannot record dead letters; holding the batch until the ledger can be written",
				zap.Int("letters", len(letters)), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, r.cfg.RetryMax)
	}
}

// published returns a copy of the events of the types the relay publishes.
// The others are acknowledged with the batch and never published: they are
// not facts for other services, and they need no dead letter, since nothing
// waits for them.
func (r *Relay) published(events []store.Event) []store.Event {
	if len(r.cfg.Types) == 0 {
		return slices.Clone(events)
	}
	out := make([]store.Event, 0, len(events))
	for _, e := range events {
		if slices.Contains(r.cfg.Types, e.AggregateType) {
			out = append(out, e)
		}
	}
	return out
}

// letterPosition returns the id a dead letter of e gets: its feed position
// when the store has one, else one derived from the event id (53 of the
// random bits of its UUIDv7, plus one, so that the id stays exact in JSON
// for JavaScript and jq and is never 0). It is the same at every delivery,
// so a redelivered dead letter is recognised rather than recorded twice.
func letterPosition(e store.Event) int64 {
	if e.Position > 0 {
		return e.Position
	}
	return int64(binary.BigEndian.Uint64(e.ID[8:])>>11) + 1
}

// deliver publishes events in waves that hold at most one event per
// aggregate, each wave after the previous one is acknowledged: Kafka keeps
// a key's records in order only within what one request writes, so this is
// what makes "n+1 never before n is acknowledged" hold across retries and
// partition batches. Many aggregates share a wave; one busy aggregate
// costs a round trip per event.
//
// Events of blocked aggregates from their first dead letter's sequence on
// are parked. Earlier ones can only be redeliveries of events already
// published (the feed hands n only after everything before it was
// handled), and are published again like any redelivery.
func (r *Relay) deliver(ctx context.Context, events []store.Event) ([]DeadLetter, error) {
	var letters []DeadLetter
	blocked := func(e store.Event) bool {
		if first, ok := r.blocked[e.AggregateID]; ok && e.Sequence >= first {
			return true
		}
		return slices.ContainsFunc(letters, func(l DeadLetter) bool {
			return l.AggregateID == e.AggregateID && l.Sequence <= e.Sequence
		})
	}
	pending := events
	for len(pending) > 0 {
		var wave, rest []store.Event
		inWave := make(map[uuid.UUID]bool)
		for _, e := range pending {
			switch {
			case blocked(e):
				letters = append(letters, r.letter(e, Parked, ""))
			case inWave[e.AggregateID]:
				rest = append(rest, e)
			default:
				inWave[e.AggregateID] = true
				wave = append(wave, e)
			}
		}
		failed, err := r.deliverWave(ctx, wave)
		if err != nil {
			return nil, err
		}
		letters = append(letters, failed...)
		pending = rest
	}
	return letters, nil
}

// deliverWave publishes events of distinct aggregates, retrying transient
// failures until ctx ends. On a permanent failure it narrows down to the
// events at fault, since kafka-go fails a whole partition batch, not one
// message: what the error says was written counts as published, and the
// rest is split and published again until each culprit is alone, then
// returned as a failed dead letter. Splitting is safe because no two events
// of a wave share an aggregate.
func (r *Relay) deliverWave(ctx context.Context, wave []store.Event) ([]DeadLetter, error) {
	if len(wave) == 0 {
		return nil, nil
	}
	msgs := make([]Message, len(wave))
	for i, e := range wave {
		msgs[i] = r.message(e)
	}
	end := publishSpans(ctx, wave, msgs)
	err := r.publish(ctx, msgs)
	end(err)
	switch {
	case err == nil:
		r.metrics.published(msgs)
		return nil, nil
	case !errors.Is(err, ErrPermanent):
		return nil, err
	case len(wave) == 1:
		r.log.Error("dead-lettering event", zap.Stringer("event_id", wave[0].ID),
			zap.Stringer("aggregate_id", wave[0].AggregateID), zap.Int64("position", wave[0].Position), zap.Error(err))
		return []DeadLetter{r.letter(wave[0], Failed, err.Error())}, nil
	}
	var pe *PublishError
	if errors.As(err, &pe) && len(pe.Failed) > 0 && len(pe.Failed) < len(wave) {
		var written []Message
		var rest []store.Event
		for i := range wave {
			if slices.Contains(pe.Failed, i) {
				rest = append(rest, wave[i])
			} else {
				written = append(written, msgs[i])
			}
		}
		r.metrics.published(written)
		return r.deliverWave(ctx, rest)
	}
	half := len(wave) / 2
	a, err := r.deliverWave(ctx, wave[:half])
	if err != nil {
		return nil, err
	}
	b, err := r.deliverWave(ctx, wave[half:])
	if err != nil {
		return nil, err
	}
	return append(a, b...), nil
}

// letter returns the dead letter of e, which has its letter position.
func (r *Relay) letter(e store.Event, state, reason string) DeadLetter {
	l := DeadLetter{
		Position: e.Position, EventID: e.ID, AggregateID: e.AggregateID, AggregateType: e.AggregateType,
		Sequence: e.Sequence, EventType: e.Type, Topic: r.cfg.Topics.For(e.AggregateType), State: state,
	}
	if state == Failed {
		now := r.now()
		l.Error, l.Attempts, l.FirstFailedAt, l.LastFailedAt = reason, 1, now, now
	}
	return l
}
