// Package relay publishes every committed event to Kafka: at least once, in
// order per aggregate, retrying transient failures behind a circuit breaker
// and dead-lettering the events that can never be published.
//
// The relay tails the store's change feed from its own checkpoint, which
// moves only past events that Kafka acknowledged or that went to the
// dead-letter ledger. A crash therefore publishes again from the
// checkpoint: consumers may see an event twice (same ce_id) but never miss
// one, and never see event n+1 of an aggregate before event n.
package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// History reads an aggregate's stored events, for replaying dead letters.
type History interface {
	Load(ctx context.Context, aggregateID uuid.UUID, after int64) ([]store.Event, error)
}

// Config tunes the relay. Zero fields take the defaults in brackets.
type Config struct {
	Topics    Topics
	Source    string // CloudEvents source ["orderd"]
	BatchSize int    // feed events read per batch [500]

	RetryInitial time.Duration // first retry delay [100ms]
	RetryMax     time.Duration // retry delay cap [5s]

	BreakerFailures  uint32        // consecutive failures that open the breaker [5]
	BreakerOpen      time.Duration // how long it stays open before probing [30s]
	BreakerSuccesses uint32        // probes that must succeed to close it [3]
}

func (c *Config) defaults() {
	if c.Source == "" {
		c.Source = "orderd"
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = 100 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerOpen <= 0 {
		c.BreakerOpen = 30 * time.Second
	}
	if c.BreakerSuccesses == 0 {
		c.BreakerSuccesses = 3
	}
}

// Relay moves events from the feed to a Publisher.
type Relay struct {
	feed    store.Feed
	history History
	pub     Publisher
	ledger  Ledger
	cfg     Config
	log     *zap.Logger
	metrics *Metrics
	breaker *gobreaker.CircuitBreaker[struct{}]

	// turn serialises the delivery of a feed batch with replays and
	// discards, so that an aggregate is never unblocked while its next event
	// is being parked. It is a one-slot semaphore rather than a mutex so
	// that an operator's replay can give up waiting for it: during a Kafka
	// outage the relay holds it while it retries.
	turn    chan struct{}
	blocked map[uuid.UUID]bool
	pushes  chan *push // Deliver calls waiting to be published together

	pos atomic.Int64
}

// New returns a relay. metrics may be nil. A nil pub makes a relay that is
// off: it must not Serve, and replays fail with ErrBrokerUnavailable.
func New(feed store.Feed, history History, pub Publisher, ledger Ledger, cfg Config, log *zap.Logger, metrics *Metrics) *Relay {
	cfg.defaults()
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	r := &Relay{feed: feed, history: history, pub: pub, ledger: ledger, cfg: cfg, log: log, metrics: metrics,
		turn: make(chan struct{}, 1), blocked: map[uuid.UUID]bool{}, pushes: make(chan *push, 1024)}
	metrics.breaker.Set(0) // closed
	r.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "kafka",
		MaxRequests: cfg.BreakerSuccesses,
		Timeout:     cfg.BreakerOpen,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.BreakerFailures },
		// A message that can never be published says nothing about the
		// broker's health: it must not open the breaker.
		IsSuccessful: func(err error) bool { return err == nil || errors.Is(err, ErrPermanent) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			log.Warn("kafka circuit breaker", zap.String("from", from.String()), zap.String("to", to.String()))
			metrics.breakerState(to)
		},
	})
	return r
}

// On reports whether the relay has a broker to publish to.
func (r *Relay) On() bool { return r.pub != nil }

// Position returns the feed position through which events are published or
// dead-lettered.
func (r *Relay) Position() int64 { return r.pos.Load() }

// Breaker returns the circuit breaker's state: closed, half-open or open.
func (r *Relay) Breaker() string { return r.breaker.State().String() }

// Serve relays the feed from the ledger's checkpoint until ctx ends, then
// returns nil. A batch being published when ctx ends is abandoned without
// moving the checkpoint; it is published again at the next start.
func (r *Relay) Serve(ctx context.Context) error {
	pos, err := r.ledger.Checkpoint(ctx)
	if err != nil {
		return r.stopped(ctx, fmt.Errorf("relay: read checkpoint: %w", err))
	}
	r.pos.Store(pos)
	if err := r.Resume(ctx); err != nil {
		return r.stopped(ctx, err)
	}

	for {
		events, err := r.feed.ReadFeed(ctx, pos, r.cfg.BatchSize)
		if err != nil {
			return r.stopped(ctx, fmt.Errorf("relay: read feed after %d: %w", pos, err))
		}
		if len(events) == 0 {
			continue
		}
		through := events[len(events)-1].Position
		if err := r.deliverBatch(ctx, events, through); err != nil {
			return r.stopped(ctx, err)
		}
		pos = through
		r.pos.Store(pos)
	}
}

// Resume reads which aggregates have dead letters, whose next events must
// be parked. Serve calls it; a feed that pushes events to Deliver calls it
// before the first. It holds the turn, so that a replay cannot finish
// between the read and its use.
func (r *Relay) Resume(ctx context.Context) error {
	if err := r.take(ctx); err != nil {
		return err
	}
	defer r.release()
	blocked, err := r.ledger.Blocked(ctx)
	if err != nil {
		return fmt.Errorf("relay: read dead letters: %w", err)
	}
	r.blocked = make(map[uuid.UUID]bool, len(blocked))
	for _, id := range blocked {
		r.blocked[id] = true
	}
	r.log.Info("relay starting", zap.Int64("position", r.Position()), zap.Int("blocked_aggregates", len(blocked)))
	return nil
}

// take waits for the turn, or for ctx to end.
func (r *Relay) take(ctx context.Context) error {
	select {
	case r.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Relay) release() { <-r.turn }

// Deliver publishes events pushed by a feed that keeps its own progress,
// such as ScyllaDB's CDC log, instead of Serve reading the store's feed. It
// returns once every event is acknowledged or dead-lettered, which is when
// the feed may save its progress; an error means it must not. The relay's
// own checkpoint does not move.
//
// Such a feed can hand an event again (after a crash) or lose one (a change
// behind its confidence window, or expired). The ledger keeps the highest
// sequence handled per aggregate: events at or below it are skipped, and a
// gap above it is filled from the store first, so that Kafka still sees
// every event once at least, in order.
//
// A dead letter is named by a feed position, which such a feed lacks: an
// event without one gets one derived from its id (53 of the random bits of
// its UUIDv7, so that the id stays exact in JSON for JavaScript and jq),
// the same at every delivery, so that a redelivered dead letter is
// recognised rather than recorded twice.
//
// Concurrent calls (a CDC reader consumes its streams in parallel, one
// append per call) are combined: whoever gets the turn publishes every
// call waiting by then in one go, so many aggregates share one Kafka round
// trip instead of taking one each.
func (r *Relay) Deliver(ctx context.Context, events []store.Event) error {
	p := &push{events: events, done: make(chan error, 1)}
	select {
	case r.pushes <- p:
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		select {
		case err := <-p.done:
			return err
		case <-ctx.Done():
			// p may still be published by another call; it is handed
			// again after a restart either way, and skipped if so.
			return ctx.Err()
		case r.turn <- struct{}{}:
			r.deliverPushes(ctx)
			r.release()
		}
	}
}

// push is one waiting Deliver call.
type push struct {
	events []store.Event
	done   chan error
}

// deliverPushes publishes every waiting call's events together and tells
// each call the outcome. The caller has the turn.
func (r *Relay) deliverPushes(ctx context.Context) {
	var batch []*push
	for len(batch) < cap(r.pushes) {
		select {
		case p := <-r.pushes:
			batch = append(batch, p)
			continue
		default:
		}
		break
	}
	if len(batch) == 0 {
		return
	}
	var events []store.Event
	for _, p := range batch {
		events = append(events, p.events...)
	}
	err := r.deliverPushed(ctx, events)
	for _, p := range batch {
		p.done <- err
	}
}

// deliverPushed is the work of Deliver for the combined events.
func (r *Relay) deliverPushed(ctx context.Context, events []store.Event) error {
	events, err := r.fill(ctx, events)
	if err != nil || len(events) == 0 {
		return err
	}
	for i, e := range events {
		if e.Position == 0 {
			events[i].Position = int64(binary.BigEndian.Uint64(e.ID[8:])>>11) + 1
		}
	}
	if _, err := r.deliverTaken(ctx, events, 0); err != nil {
		return err
	}
	top := make(map[uuid.UUID]int64)
	for _, e := range events {
		top[e.AggregateID] = max(top[e.AggregateID], e.Sequence)
	}
	if err := r.ledger.MarkHandled(context.WithoutCancel(ctx), top); err != nil {
		return fmt.Errorf("relay: mark handled: %w", err)
	}
	return nil
}

// fill drops the events already handled and loads from the store those the
// feed skipped, per aggregate, keeping each aggregate's events in order.
func (r *Relay) fill(ctx context.Context, events []store.Event) ([]store.Event, error) {
	var ids []uuid.UUID
	byAgg := make(map[uuid.UUID][]store.Event)
	for _, e := range events {
		if byAgg[e.AggregateID] == nil {
			ids = append(ids, e.AggregateID)
		}
		byAgg[e.AggregateID] = append(byAgg[e.AggregateID], e)
	}
	handled, err := r.ledger.Handled(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("relay: read handled sequences: %w", err)
	}
	var out []store.Event
	for _, id := range ids {
		last := handled[id]
		var fresh []store.Event
		for _, e := range byAgg[id] {
			if e.Sequence > last {
				fresh = append(fresh, e)
			}
		}
		slices.SortFunc(fresh, func(a, b store.Event) int { return int(a.Sequence - b.Sequence) })
		if len(fresh) > 0 && fresh[0].Sequence > last+1 {
			missed, err := r.history.Load(ctx, id, last)
			if err != nil {
				return nil, fmt.Errorf("relay: load the events the feed skipped of %s: %w", id, err)
			}
			var gap []store.Event
			for _, e := range missed {
				if e.Sequence < fresh[0].Sequence {
					gap = append(gap, e)
				}
			}
			r.log.Warn("the feed skipped events; published from the store", zap.Stringer("aggregate_id", id),
				zap.Int64("after", last), zap.Int("events", len(gap)))
			fresh = append(gap, fresh...)
		}
		out = append(out, fresh...)
	}
	return out, nil
}

// stopped turns an error caused by ctx ending into a clean stop.
func (r *Relay) stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		r.log.Info("relay stopped", zap.Int64("position", r.Position()))
		return nil
	}
	return err
}

// deliverBatch publishes a feed batch, dead-letters what cannot be
// published, and moves the checkpoint past it.
func (r *Relay) deliverBatch(ctx context.Context, events []store.Event, through int64) error {
	if err := r.take(ctx); err != nil {
		return err
	}
	defer r.release()
	_, err := r.deliverTaken(ctx, events, through)
	return err
}

// deliverTaken is deliverBatch for a caller that has the turn. It returns
// the dead letters it recorded.
func (r *Relay) deliverTaken(ctx context.Context, events []store.Event, through int64) ([]DeadLetter, error) {
	letters, err := r.deliver(ctx, events)
	if err != nil {
		return nil, err
	}
	// Everything is acknowledged or dead-lettered: record it even if ctx
	// ended meanwhile, so that it is not published again.
	if err := r.ledger.Advance(context.WithoutCancel(ctx), through, letters); err != nil {
		return nil, fmt.Errorf("relay: advance to %d: %w", through, err)
	}
	for _, l := range letters {
		r.blocked[l.AggregateID] = true
	}
	r.metrics.deadLettered(letters)
	return letters, nil
}

// deliver publishes events in waves that hold at most one event per
// aggregate, each wave after the previous one is acknowledged: Kafka keeps
// a key's records in order only within what one request writes, so this is
// what makes "n+1 never before n is acknowledged" hold across retries and
// partition batches. Many aggregates share a wave; one busy aggregate
// costs a round trip per event. Events of blocked aggregates are parked.
func (r *Relay) deliver(ctx context.Context, events []store.Event) ([]DeadLetter, error) {
	var letters []DeadLetter
	blocked := func(id uuid.UUID) bool {
		if r.blocked[id] {
			return true
		}
		for _, l := range letters {
			if l.AggregateID == id {
				return true
			}
		}
		return false
	}
	pending := events
	for len(pending) > 0 {
		var wave, rest []store.Event
		inWave := make(map[uuid.UUID]bool)
		for _, e := range pending {
			switch {
			case blocked(e.AggregateID):
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
	err := r.publish(ctx, msgs)
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

// publish sends msgs through the circuit breaker, retrying transient
// failures with capped, jittered exponential backoff until ctx ends. While
// the breaker is open attempts fail at once and only the backoff waits.
func (r *Relay) publish(ctx context.Context, msgs []Message) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.cfg.RetryInitial),
		backoff.WithMaxInterval(r.cfg.RetryMax),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0), // transient failures never dead-letter
	)
	attempt := 0
	return backoff.Retry(func() error {
		attempt++
		_, err := r.breaker.Execute(func() (struct{}, error) { return struct{}{}, r.pub.Publish(ctx, msgs) })
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrPermanent):
			return backoff.Permanent(err)
		case ctx.Err() != nil:
			return backoff.Permanent(ctx.Err())
		}
		r.metrics.retried()
		if attempt == 1 || attempt%10 == 0 {
			r.log.Warn("publish failed; retrying", zap.Int("messages", len(msgs)), zap.Int("attempt", attempt),
				zap.String("breaker", r.Breaker()), zap.Error(err))
		}
		return err
	}, backoff.WithContext(b, ctx))
}

func (r *Relay) letter(e store.Event, state, reason string) DeadLetter {
	now := time.Now().UTC()
	l := DeadLetter{
		Position: e.Position, EventID: e.ID, AggregateID: e.AggregateID, AggregateType: e.AggregateType,
		Sequence: e.Sequence, EventType: e.Type, Topic: r.cfg.Topics.For(e.AggregateType), State: state,
	}
	if state == Failed {
		l.Error, l.Attempts, l.FirstFailedAt, l.LastFailedAt = reason, 1, now, now
	}
	return l
}
