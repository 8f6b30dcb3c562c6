package cql

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/cql/cdc"
	"github.com/orderd/orderd/internal/store"
)

// Defaults of FeedOptions, applied to its zero fields.
const (
	DefaultHintPoll       = 100 * time.Millisecond
	DefaultHintOverlap    = time.Second
	DefaultHintTTL        = 10 * time.Minute
	DefaultHintQueue      = 10000
	DefaultReconcileEvery = time.Minute
	DefaultReconcileRate  = 20000
	DefaultSweepEvery     = time.Hour
	DefaultClockSkew      = time.Second
	DefaultRangeSplits    = 256
	DefaultBatchSize      = 256
	DefaultConcurrency    = 64
	DefaultDeliveries     = 4
	DefaultCacheSize      = 100000
)

// FeedOptions tune the change feed (Subscribe) and the hints that appends
// write for it. The zero value takes the defaults above.
//
// Completeness never depends on them: the fast path (the CDC log on
// ScyllaDB, hints on Cassandra) only shortens the wait, and the
// reconciliation (the recent pass and the full sweep) hands every
// aggregate a consumer is behind on, whatever the fast path missed. They
// trade latency and load.
type FeedOptions struct {
	// HintPoll is how often a process with subscriptions on Cassandra
	// reads new hints (once for all of them, see hintHub): roughly the
	// latency from an append to its Handler call there.
	HintPoll time.Duration
	// HintOverlap is how far before the previous poll each poll reads
	// again, so that a hint that became visible late (a slow write, the
	// clock of the instance that wrote it running behind) is still seen.
	HintOverlap time.Duration
	// HintTTL is how long a hint is kept: at least HintOverlap, longer only
	// helps someone reading the table by hand.
	HintTTL time.Duration
	// HintQueue bounds the hints waiting to be written, and those read
	// waiting for each subscription. When it is full a hint is dropped
	// (and counted, see HintsDropped) rather than slowing the append or
	// the other subscriptions: the reconciliation pass finds that append
	// instead.
	HintQueue int

	// ReconcileEvery is the time from the start of one recent pass (the
	// aggregates the index of touched aggregates names since the last) to
	// the start of the next; one runs at once when a subscription starts.
	// It bounds how long an event the fast path missed waits.
	ReconcileEvery time.Duration
	// ReconcileRate caps the aggregates the full sweeps read per second,
	// all running sweeps together (each reads its share), to bound their
	// load on the cluster.
	ReconcileRate int
	// SweepEvery is the time from the start of one full sweep of the token
	// ring to the start of the next. The sweep is the safety net for what
	// the index cannot name (appends older than its three-day TTL, rows
	// written by hand); it resumes from its saved cursor after a restart
	// or a handover.
	SweepEvery time.Duration
	// ClockSkew is the budget for how far the clocks of orderd's instances
	// may differ: the recent pass reads again that far (plus twice
	// Config.Timeout, an append's longest life) before its watermark, and
	// the CDC progress saved on ScyllaDB stays that far (plus the
	// generation leeway and twice Config.Timeout) behind what was handled.
	// orderd_store_clock_skew_seconds shows the skew observed against the
	// cluster's nodes.
	ClockSkew time.Duration
	// RangeSplits is the number of token ranges a sweep reads one after
	// another, saving its cursor after each. A subscription holds one
	// range's progress in memory at a time, so a keyspace of N aggregates
	// needs about N/RangeSplits entries; fewer splits mean fewer queries
	// per sweep.
	RangeSplits int

	// BatchSize caps the events handed in one Handler call.
	BatchSize int
	// Concurrency bounds the reads and writes a subscription has in flight
	// (loading events, reading and saving progress).
	Concurrency int
	// Deliveries bounds the batches of one consumer that this process
	// delivers at once, over all the shards it holds. A shard whose
	// batch waits for a turn gathers what arrives meanwhile into it. Each
	// batch costs a Paxos round (its fence check), so under load fewer,
	// larger batches leave the cluster more for the commands; when idle,
	// a batch finds a turn free and starts at once.
	Deliveries int
	// CacheSize bounds the aggregates whose progress a subscription keeps
	// in memory; the others are read back from feed_progress when needed.
	CacheSize int
	// Redeliverable names the consumers whose handlers take an event
	// handed again as a no-op (the projector's rows are stamped with their
	// version). For an aggregate at version 1 whose progress is not
	// cached, their subscriptions hand event 1 without reading
	// feed_progress: progress is 0 or 1, and a wrong guess only hands it
	// again. A burst of creations then costs no progress read. Any other
	// consumer (the relay's records would be duplicated) reads it.
	Redeliverable []string

	// CDCWindow, CDCPollDelay and CDCIdleDelay are passed to the CDC
	// reader on ScyllaDB (cdc.Config's Window, PollDelay and IdleDelay;
	// zero takes its defaults). Since the reconciliation pass finds what a
	// short confidence window misses, Window can be short.
	CDCWindow, CDCPollDelay, CDCIdleDelay time.Duration
}

func (o FeedOptions) withDefaults() FeedOptions {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setInt := func(n *int, def int) {
		if *n <= 0 {
			*n = def
		}
	}
	set(&o.HintPoll, DefaultHintPoll)
	set(&o.HintOverlap, DefaultHintOverlap)
	set(&o.HintTTL, DefaultHintTTL)
	o.HintTTL = max(o.HintTTL, o.HintOverlap+hintBucket)
	setInt(&o.HintQueue, DefaultHintQueue)
	set(&o.ReconcileEvery, DefaultReconcileEvery)
	setInt(&o.ReconcileRate, DefaultReconcileRate)
	set(&o.SweepEvery, DefaultSweepEvery)
	set(&o.ClockSkew, DefaultClockSkew)
	setInt(&o.RangeSplits, DefaultRangeSplits)
	setInt(&o.BatchSize, DefaultBatchSize)
	setInt(&o.Concurrency, DefaultConcurrency)
	setInt(&o.Deliveries, DefaultDeliveries)
	setInt(&o.CacheSize, DefaultCacheSize)
	return o
}

// subscription is one running Subscribe: the fast path and the
// reconciliation pass send requests to the delivery core (deliver.go),
// which alone calls the Handler.
type subscription struct {
	ctx      context.Context // Subscribe's, as the caller gave it
	s        *Store
	consumer string
	// shard is the part of the aggregate-id space the subscription
	// hands (Whole: everything), from the fence of Subscribe's context.
	shard store.Shard
	// key names the subscription's own state (its sweep cursor and
	// watermark, its lag, its CDC progress, s.subs): the consumer for
	// Whole, consumer/IIII for a shard, as the shard's lease is named.
	key string
	h   store.Handler
	opt FeedOptions
	// redeliverable: the consumer is among FeedOptions.Redeliverable.
	redeliverable bool
	log           *zap.Logger
	work          chan request
	// local queues this process's appends to the subscription's shard
	// (handoff.go), which forwardLocal passes to work.
	local chan request

	// handled caches what the consumer has handled, per aggregate; only
	// the delivery goroutine uses it.
	handled map[uuid.UUID]int64
	// parked are the aggregates whose events showed a hole, waiting for
	// a retry (gaps.go); only the delivery goroutine uses it.
	parked map[uuid.UUID]*parking
	// load reads an aggregate's events after a sequence: Store.load.
	load func(ctx context.Context, id uuid.UUID, after int64) ([]store.Event, error)
	// lag is what the last pass of this subscription measured; nil before.
	lag atomic.Pointer[store.Lag]
}

// Subscribe hands every committed event to h under the consumer's
// progress, kept per aggregate in feed_progress, until ctx ends (then it
// returns nil) or h or the cluster fails (then an error, wrapping h's). It
// returns store.ErrClosed after Close.
//
// When ctx carries a fence (store.WithFence) of a shard of the keyspace
// (see Shards), only the events of that shard's aggregates reach h, and
// every part of the feed below (the fast path, the recent pass, the sweep,
// the saved cursor, watermark and lag) is that shard's own, so that the
// subscriptions of the shards of one consumer, on any instances, share the
// work and together hand every event. Without a fence, or with one of
// store.Whole, it hands every event. A fence of a shard of another count
// than the keyspace's is refused.
//
// Events reach h by two paths, through one delivery core that checks
// progress, so that each aggregate's events arrive in order and without
// gaps whichever path found them first: the fast path (the CDC log on
// ScyllaDB, hints on Cassandra), and the reconciliation: a recent pass,
// at once and then every FeedOptions.ReconcileEvery, over the aggregates
// the index of touched aggregates names since the last one, and a full
// sweep of the token ring in the background (see reconcile.go); both hand
// every aggregate whose version is above the consumer's progress. A
// failed read there is retried; it never ends the subscription. Events carry no
// Position. A batch may hold several aggregates; progress is saved after
// each batch h returned nil for.
func (s *Store) Subscribe(ctx context.Context, consumer string, h store.Handler) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if consumer == "" {
		return errors.New("scylla: subscribe: empty consumer name")
	}
	f, _ := store.FenceOf(ctx)
	shard, err := s.checkShard(f.Shard)
	if err != nil {
		return fmt.Errorf("scylla: feed %s: %w", consumer, err)
	}
	sub := s.newSubscription(ctx, consumer, shard, h)
	s.subs.Store(sub.key, sub)
	defer s.subs.CompareAndDelete(sub.key, sub)
	s.addLocal(sub)
	defer s.dropLocal(sub)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sub.deliver(gctx) })
	g.Go(func() error { return sub.recent(gctx) })
	g.Go(func() error { return sub.sweep(gctx) })
	g.Go(func() error { return sub.watchSkew(gctx) })
	g.Go(func() error { return sub.fastPath(gctx) })
	g.Go(func() error { return sub.forwardLocal(gctx) })
	g.Go(func() error {
		select {
		case <-s.done:
			return store.ErrClosed
		case <-gctx.Done():
			return nil
		}
	})
	err = g.Wait()
	switch {
	case err != nil && (ctx.Err() == nil || errors.Is(err, store.ErrFenced)): // a refused save says so even at a stop
		return fmt.Errorf("scylla: feed %s: %w", consumer, s.closedOr(ctx, err))
	case s.closed.Load():
		return store.ErrClosed
	}
	return nil
}

func (s *Store) newSubscription(ctx context.Context, consumer string, shard store.Shard, h store.Handler) *subscription {
	load := s.load
	if s.feedLoad != nil {
		load = s.feedLoad
	}
	log := s.log.With(zap.String("consumer", consumer))
	if shard.Count > 1 {
		log = log.With(zap.Int("shard", shard.Index))
	}
	return &subscription{
		ctx: ctx, s: s, consumer: consumer, shard: shard, key: shard.Lease(consumer), h: h, opt: s.feed,
		redeliverable: slices.Contains(s.feed.Redeliverable, consumer),
		log:           log,
		work:          make(chan request, s.feed.BatchSize),
		local:         make(chan request, handOffQueue),
		handled:       make(map[uuid.UUID]int64),
		parked:        make(map[uuid.UUID]*parking),
		load:          load,
	}
}

// owns reports whether aggregate id is in the subscription's shard.
func (sub *subscription) owns(id uuid.UUID) bool {
	return sub.shard.Count <= 1 || shardOf(id, sub.shard.Count) == sub.shard.Index
}

// fastPath feeds the delivery core with what the cluster says was just
// appended: the CDC log on ScyllaDB, the hints on Cassandra, each filtered
// to the subscription's shard. (The CDC reader reads every stream and
// drops the other shards' changes: scylla-cdc-go reads the streams of
// every vnode or tablet, with no way to leave some out.)
func (sub *subscription) fastPath(ctx context.Context) error {
	if !sub.s.scylla {
		return sub.pollHints(ctx)
	}
	r := cdc.New(cdc.Config{
		Session:   sub.s.sess.Session,
		Keyspace:  sub.s.cfg.Keyspace,
		App:       sub.key,
		Window:    sub.opt.CDCWindow,
		PollDelay: sub.opt.CDCPollDelay,
		IdleDelay: sub.opt.CDCIdleDelay,
		Margin:    sub.cdcMargin(),
		Upcaster:  sub.s.up,
		Log:       sub.log.Named("cdc"),
	}, func(ctx context.Context, events []store.Event) (<-chan struct{}, error) {
		if len(events) == 0 || !sub.owns(events[0].AggregateID) {
			return nil, nil // nothing to wait for: the change is another shard's
		}
		last := events[len(events)-1]
		// The reader saves its progress past this append only once the
		// core acknowledged it: a handover or a crash before then reads
		// it again (and the margin a little more), never skips it.
		ack := make(chan struct{})
		r := request{id: last.AggregateID, version: last.Sequence, events: events, known: -1, acks: []chan struct{}{ack}}
		return ack, sub.send(ctx, r)
	})
	return r.Serve(ctx)
}

// GenerationLeeway is how long after a CDC generation's start ScyllaDB may
// still write changes into the generation before it: its
// generation_leeway, 5 s by default. A reader may have closed the old
// generation meanwhile.
const GenerationLeeway = 5 * time.Second

// cdcMargin is how far the CDC progress saved on ScyllaDB stays behind the
// changes handled: the generation leeway, an LWT's longest life (one
// attempt and the settling read, 2 × Config.Timeout) and the clock-skew
// budget. A restart or the next holder reads that much log again, which
// the per-aggregate progress makes cheap; what lands behind the live
// reader's short window is the recent pass's.
func (sub *subscription) cdcMargin() time.Duration {
	return GenerationLeeway + 2*sub.s.cfg.Timeout + sub.opt.ClockSkew
}

// send queues r for the delivery core, waiting while it is busy.
func (sub *subscription) send(ctx context.Context, r request) error {
	select {
	case sub.work <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Lag reports how far the consumer was behind at the last reconciliation
// passes, over the whole keyspace: on a keyspace of one shard, what
// ShardLag says of store.Whole; on one of several, the sum over its shards
// (Events added up, the oldest Age, the earliest At), Known only when every
// shard's is, or else what a subscription of the whole consumer (with no
// shard) measured, if one did. It returns store.ErrClosed after Close and
// an error when the read fails.
func (s *Store) Lag(ctx context.Context, consumer string) (store.Lag, error) {
	if s.shards <= 1 {
		return s.ShardLag(ctx, consumer, store.Whole)
	}
	if s.closed.Load() {
		return store.Lag{}, store.ErrClosed
	}
	keys := make([]string, s.shards)
	for i := range keys {
		keys[i] = store.Shard{Index: i, Count: s.shards}.Lease(consumer)
	}
	saved, err := s.savedLags(ctx, keys)
	if err != nil {
		return store.Lag{}, fmt.Errorf("scylla: lag of %s: %w", consumer, s.closedOr(ctx, err))
	}
	sum := store.Lag{Known: true}
	for _, k := range keys {
		l := saved[k]
		if v, ok := s.subs.Load(k); ok {
			if m := v.(*subscription).lag.Load(); m != nil {
				l = *m
			}
		}
		if !l.Known {
			sum = store.Lag{}
			break
		}
		sum.Events += l.Events
		sum.Age = max(sum.Age, l.Age)
		if sum.At.IsZero() || l.At.Before(sum.At) {
			sum.At = l.At
		}
	}
	if sum.Known {
		return sum, nil
	}
	return s.ShardLag(ctx, consumer, store.Whole)
}

// ShardLag reports how far the consumer was behind on one shard (store.Whole:
// the subscription of the whole consumer) at its last reconciliation
// pass: Events counts the events the pass found unhandled (ones the fast
// path had not delivered by then, or everything after a stop), Age is how
// old the oldest of them was, by its timestamp, and At is when the pass
// ended. While a subscription of this process runs the consumer on that
// shard and has finished a pass, that pass's figures come from memory;
// otherwise those the last pass of any instance saved in feed_lag. Known
// is false when no pass has ever finished for the consumer on the shard.
// It returns store.ErrClosed after Close, and an error when the read fails
// or the shard is not one of the keyspace's.
func (s *Store) ShardLag(ctx context.Context, consumer string, shard store.Shard) (store.Lag, error) {
	if s.closed.Load() {
		return store.Lag{}, store.ErrClosed
	}
	shard, err := s.checkShard(shard)
	if err != nil {
		return store.Lag{}, err
	}
	key := shard.Lease(consumer)
	if v, ok := s.subs.Load(key); ok {
		if l := v.(*subscription).lag.Load(); l != nil {
			return *l, nil
		}
	}
	l, err := s.savedLag(ctx, key)
	if err != nil {
		return store.Lag{}, fmt.Errorf("scylla: lag of %s: %w", consumer, s.closedOr(ctx, err))
	}
	return l, nil
}

// HintsDropped returns how many hints were not written since Open, because
// the queue was full or the write failed, or were read but not handed to
// a subscription whose HintQueue of hints read was full. Each one delays
// an event until the next reconciliation pass; a count that grows says
// HintQueue is too small or the cluster or a worker too slow.
func (s *Store) HintsDropped() int64 {
	n := s.hintsIn.lost.Load()
	if s.hints != nil {
		n += s.hints.dropped.Load()
	}
	return n
}

var _ store.Feed = (*Store)(nil)
