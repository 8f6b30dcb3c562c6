// Package relay publishes every committed event to Kafka: at least once, in
// order per aggregate, retrying transient failures behind a circuit breaker
// and dead-lettering the events that can never be published.
//
// The relay is a consumer of the store's change feed (store.Feed), named
// Consumer. Its Handle returns only once every event of a batch is
// acknowledged by Kafka or recorded as a dead letter, and the feed saves
// the consumer's progress only past such batches. A crash therefore hands
// events again: consumers may see an event twice (same ce_id) but never
// miss one, and never see event n+1 of an aggregate before event n.
//
// The relay's durable state is its Ledger of dead letters, which every
// instance of a deployment shares. Exactly one instance runs Serve (the
// lead elects it); operators' commands work from any instance, by queuing
// a request in the ledger that the active relay carries out.
package relay

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/store"
)

// Consumer is the relay's consumer name on the feed: the name its progress
// is kept under.
const Consumer = "relay"

// Config tunes the relay. Zero fields take the defaults in brackets.
type Config struct {
	Topics Topics
	Source string // CloudEvents source ["orderd"]

	// Types are the aggregate types whose events are published [all]. The
	// feed's events of other types (the domain's internal bookkeeping) are
	// acknowledged without being published.
	Types []string

	RetryInitial time.Duration // first retry delay [100ms]
	RetryMax     time.Duration // retry delay cap [5s]

	BreakerFailures  uint32        // consecutive failures that open the breaker [5]
	BreakerOpen      time.Duration // how long it stays open before probing [5s]
	BreakerSuccesses uint32        // probes that must succeed to close it [3]

	// StepDown, when positive, is how long a publish may go without
	// success (failing, behind an open breaker, or hanging) before Serve
	// gives up with an error wrapping ErrCannotPublish, so that its worker
	// can hand the lease to an instance that reaches Kafka [0: never].
	StepDown time.Duration

	// RequestPoll is how often the active relay looks in the ledger for
	// requests made on other instances [1s]; requests made on its own
	// instance wake it at once.
	RequestPoll time.Duration
	// RequestWait is how often an operator's command looks in the ledger
	// for its request's outcome [200ms].
	RequestWait time.Duration

	Now func() time.Time // the clock of dead-letter and request times [time.Now]
}

func (c *Config) defaults() {
	if c.Source == "" {
		c.Source = "orderd"
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
		c.BreakerOpen = 5 * time.Second
	}
	if c.BreakerSuccesses == 0 {
		c.BreakerSuccesses = 3
	}
	if c.RequestPoll <= 0 {
		c.RequestPoll = time.Second
	}
	if c.RequestWait <= 0 {
		c.RequestWait = 200 * time.Millisecond
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Relay moves events from the feed to a Publisher.
type Relay struct {
	history store.Loader // for replaying dead letters
	pub     Publisher
	ledger  Ledger
	cfg     Config
	log     *zap.Logger
	metrics *Metrics
	breaker *gobreaker.CircuitBreaker[struct{}]

	// turn serialises the handling of a feed batch with the requests the
	// relay carries out, so that an aggregate is never unblocked while its
	// next event is being parked. It is a one-slot semaphore rather than a
	// mutex so that a request can give up waiting for it: during a Kafka
	// outage Handle holds it while it retries.
	turn chan struct{}
	// blocked maps each aggregate with dead letters to the lowest sequence
	// among them; nil until read from the ledger. Only the holder of the
	// turn uses it.
	blocked map[uuid.UUID]int64
	// wake tells the request loop that a request was made on this
	// instance.
	wake chan struct{}
	// requested, when set, is called after a request is queued here, to
	// wake the relays of other shards in this process (see OnRequest).
	requested func()
	// pending is when the publish in progress began (Unix nanoseconds),
	// 0 when none is: how long Kafka has not taken what the relay has.
	pending atomic.Int64
}

// ErrCannotPublish is wrapped by Serve's error when a publish went without
// success for longer than Config.StepDown.
var ErrCannotPublish = errors.New("relay: cannot publish")

// New returns a relay. metrics may be nil. A nil pub makes a relay that is
// off: Serve and Handle fail, and replays and discards fail with
// ErrBrokerUnavailable; List and Inspect work.
func New(history store.Loader, pub Publisher, ledger Ledger, cfg Config, log *zap.Logger, metrics *Metrics) *Relay {
	cfg.defaults()
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	r := &Relay{history: history, pub: pub, ledger: ledger, cfg: cfg, log: log, metrics: metrics,
		turn: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
	r.breaker = newBreaker(cfg, log, metrics)
	return r
}

// Wake has the relay look for operators' requests now rather than at its
// next poll, if it is serving.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// OnRequest sets f to be called each time a request is queued through
// this relay (Replay, Discard), so that the relays of the shards that
// serve in this process, which carry requests out, wake at once. Call it
// before the relay is used.
func (r *Relay) OnRequest(f func()) { r.requested = f }

// On reports whether the relay has a broker to publish to.
func (r *Relay) On() bool { return r.pub != nil }

// Breaker returns the circuit breaker's state: closed, half-open or open.
func (r *Relay) Breaker() string { return r.breaker.State().String() }

// Serve relays the feed under Consumer's progress and carries out the
// operators' requests until ctx ends, then returns nil. It returns an
// error when the feed or the ledger fails, or when the relay is off. A
// batch being published when ctx ends is abandoned; the feed hands it
// again at the next start.
func (r *Relay) Serve(ctx context.Context, feed store.Feed) error {
	if r.pub == nil {
		return errRelayOff
	}
	if err := r.take(ctx); err != nil {
		return r.stopped(ctx, err)
	}
	// A new holder reads the blocked set afresh: the one in memory is from
	// an earlier term of this instance, and its successor in between may
	// have parked or published since. Under a fence (store.WithFence),
	// Blocked first claims the ledger for this epoch, so that no write of
	// an earlier holder lands after the read.
	r.blocked = nil
	err := r.loadBlocked(ctx)
	r.release()
	if err != nil {
		return r.stopped(ctx, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.serveRequests(gctx) })
	if r.cfg.StepDown > 0 {
		g.Go(func() error { return r.watchStall(gctx) })
	}
	g.Go(func() error {
		if err := feed.Subscribe(gctx, Consumer, r.Handle); err != nil {
			return fmt.Errorf("relay: %w", err)
		}
		return nil
	})
	return r.stopped(ctx, g.Wait())
}

// Stalled returns how long the publish in progress has gone without
// success, 0 when none is in progress.
func (r *Relay) Stalled() time.Duration {
	since := r.pending.Load()
	if since == 0 {
		return 0
	}
	return time.Since(time.Unix(0, since))
}

// watchStall returns an error wrapping ErrCannotPublish once a publish has
// gone without success for Config.StepDown, or nil when ctx ends.
func (r *Relay) watchStall(ctx context.Context) error {
	tick := time.NewTicker(min(r.cfg.StepDown/10, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if d := r.Stalled(); d >= r.cfg.StepDown {
				r.log.Warn("relay: Kafka has taken nothing for too long; stepping down",
					zap.Duration("stalled", d), zap.Duration("step_down", r.cfg.StepDown), zap.String("breaker", r.Breaker()))
				return fmt.Errorf("%w: no publish succeeded for %v (breaker %s)", ErrCannotPublish, d.Round(time.Second), r.Breaker())
			}
		}
	}
}

// loadBlocked reads which aggregates have dead letters, unless it did
// already in this Serve. The caller has the turn.
func (r *Relay) loadBlocked(ctx context.Context) error {
	if r.blocked != nil {
		return nil
	}
	blocked, err := r.ledger.Blocked(ctx)
	if err != nil {
		return fmt.Errorf("relay: read dead letters: %w", err)
	}
	r.blocked = blocked
	r.log.Info("relay starting", zap.Int("blocked_aggregates", len(blocked)))
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

// stopped turns an error caused by ctx ending into a clean stop.
func (r *Relay) stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		r.log.Info("relay stopped")
		return nil
	}
	if err == nil {
		return errors.New("relay: the feed stopped before ctx ended")
	}
	return err
}

// now returns the relay's clock in UTC.
func (r *Relay) now() time.Time { return r.cfg.Now().UTC() }
