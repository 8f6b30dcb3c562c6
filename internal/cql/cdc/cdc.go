// Package cdc is the fast path of the ScyllaDB backend's change feed: it
// reads the CDC log of the events table with scylla-cdc-go and hands each
// committed append, as events in sequence order, to a handler. Each reader
// runs under its own application name, so each keeps its own progress in
// the library's progress table.
//
// It is a fast path, not the whole feed: the feed's reconciliation pass
// compares every aggregate's version in the events table with how far a
// consumer has got, and delivers whatever this reader missed (a change
// written behind the confidence window, say an LWT completed late by
// Paxos). So a miss costs latency, not completeness, and a change handed
// twice is harmless; the settings below are chosen for latency and for a
// light load on the cluster.
//
// Within a CDC stream changes come in time order, and an aggregate's events
// all live in one partition, hence one stream: an aggregate's appends
// arrive in order.
//
// # Latency, from the settings
//
// A change becomes readable once it is Window old; each group of streams is
// polled IdleDelay after the start of its previous, empty, poll. An append
// on an idle cluster therefore reaches the handler after Window, plus a
// uniform wait of 0 to IdleDelay for the next poll, plus the query (a few
// milliseconds on a LAN) and the handler itself. With the defaults (500 ms
// and 750 ms): p50 ≈ 0.5 + 0.375 + 0.02 ≈ 0.9 s, worst case ≈ 1.3 s, before
// the handler's own time. Under steady traffic polls follow every
// PollDelay (250 ms) instead: p50 ≈ 0.65 s.
//
// # Catching up
//
// A reader with no progress starts MaxAge ago (the library never starts
// before the table's CDC TTL, that is, before the log's oldest change). The
// library walks the log one query window at a time per group of streams
// (one group per vnode, 768 groups on 3 nodes × 256 vnodes, each holding a
// stream per shard; one per tablet on a tablets keyspace), waiting
// PollDelay or IdleDelay after each window. With 1-hour windows a week of
// log took 168 queries per group, at least 168 × 1 s (about 3 minutes) when
// the windows were empty, and 129,024 queries in all. Here a window spans
// catchUpWindow (30 days), so any backlog the log can hold is one query per
// group and generation: 768 queries, started within PollDelay of each
// other, each paged by the driver (its page size, 5,000 rows by default).
// A quiet week is then read in about a second; a busy one in the time it
// takes to page through and hand its changes, with no delay in between.
// Each CDC generation the backlog spans (one per topology change on
// vnodes) adds one such round of queries, the next starting when the
// previous generation is read.
//
// # Progress
//
// Progress is kept in memory and written to the progress table every
// SaveEvery, once per stream that moved, and once more when the reader
// stops. It used to be written once per stream on every poll, empty or
// not: on 3 nodes × 256 vnodes × 8 shards, 6,144 writes a second per
// reader on an idle cluster. With SaveEvery = 10 s it is 614 a second on
// average (an idle stream moves at every empty poll), written in one burst
// per period with at most 32 writes in flight. The price: a reader that
// crashes re-reads up to SaveEvery of log, plus the poll under way, and
// hands those changes again; the feed ignores what a consumer already has.
// (The library marks a stream without changes only after an empty poll of
// its group; in a group with changes at every poll, such a stream's mark
// lags, and a restart reads the group again from there, in one paged
// query.)
package cdc

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// Defaults of the zero fields of Config.
const (
	DefaultWindow    = 500 * time.Millisecond
	DefaultPollDelay = 250 * time.Millisecond
	DefaultIdleDelay = 750 * time.Millisecond
	DefaultMaxAge    = 7 * 24 * time.Hour
	DefaultSaveEvery = 10 * time.Second
)

// catchUpWindow is the widest span of log one query reads. It is above any
// CDC TTL orderd sets by default (7 days), so that a reader with no
// progress, or one back from a long outage, reads its whole backlog in one
// paged query per group of streams instead of one per hour of log.
const catchUpWindow = 30 * 24 * time.Hour

// stopFlushTimeout bounds the last progress write when the reader stops.
const stopFlushTimeout = 10 * time.Second

// Handler takes the events of one append, in sequence order. It may act
// on them later: the channel it returns (nil when it is done already)
// closes once they are handled, and only then may the reader's saved
// progress move past the change. An error stops the reader, which is
// restarted by its supervisor from the last saved progress.
type Handler func(ctx context.Context, events []store.Event) (<-chan struct{}, error)

// Config configures a Reader. Zero durations take the defaults in
// brackets, chosen for latency; the library's own (a 30 s window, 10-30 s
// delays) put a minute between a command and its consumers.
type Config struct {
	Session  *gocql.Session
	Keyspace string
	Table    string // the events table ["events"]
	App      string // the consumer's name, which keys its progress

	// Window is how old a change must be before it is read
	// [DefaultWindow, 500ms]. ScyllaDB is eventually consistent: a write
	// can reach the CDC log after a later one, and the reader skips
	// whatever lands behind what it has read. A change that lands later
	// than Window (a timed-out LWT that Paxos completes afterwards, a
	// node's clock behind the others') is not lost: the feed's
	// reconciliation pass delivers it, later. A longer window means fewer
	// such changes and more latency for all the others.
	Window time.Duration
	// PollDelay is the time between the starts of two polls of a group of
	// streams after one that found changes [DefaultPollDelay, 250ms];
	// IdleDelay after one that found none [DefaultIdleDelay, 750ms]. Each
	// poll is one query per group of streams (one per vnode, or one per
	// tablet), so IdleDelay sets the idle read load: 768 groups on 3 nodes
	// × 256 vnodes make about 1,000 queries a second per reader at 750ms.
	PollDelay, IdleDelay time.Duration
	// MaxAge is how far back a reader with no progress starts
	// [DefaultMaxAge, 7 days, the default CDC TTL]; the library starts no
	// earlier than the log's oldest change anyway.
	MaxAge time.Duration
	// SaveEvery is how often a stream's progress is written at most
	// [DefaultSaveEvery, 10s]. A restart re-reads up to SaveEvery of log.
	SaveEvery time.Duration
	// Margin is how far behind the handled changes the saved progress
	// stays [0]: a restart or the next holder reads that much log again,
	// and so sees the changes that landed behind the window meanwhile (a
	// write into a generation the reader had closed, within ScyllaDB's
	// generation leeway; an LWT that committed late; a writer's clock
	// behind). The feed sets the generation leeway plus twice its timeout
	// plus the clock-skew budget.
	Margin time.Duration

	Upcaster store.Upcaster // applied to every event; nil for none
	Log      *zap.Logger
}

func (c *Config) defaults() {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	if c.Table == "" {
		c.Table = "events"
	}
	set(&c.Window, DefaultWindow)
	set(&c.PollDelay, DefaultPollDelay)
	set(&c.IdleDelay, DefaultIdleDelay)
	set(&c.MaxAge, DefaultMaxAge)
	set(&c.SaveEvery, DefaultSaveEvery)
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
}

// advanced returns the library's settings for c, whose defaults are
// applied.
func (c *Config) advanced() scyllacdc.AdvancedReaderConfig {
	return scyllacdc.AdvancedReaderConfig{
		ConfidenceWindowSize:   c.Window,
		PostNonEmptyQueryDelay: c.PollDelay,
		PostEmptyQueryDelay:    c.IdleDelay,
		ChangeAgeLimit:         c.MaxAge,
		// A window only bounds a query from above, and the query is paged:
		// a wide one costs only what it finds. When caught up, the window
		// ends at now-Window whatever its width.
		QueryTimeWindowSize: max(catchUpWindow, c.MaxAge),
	}
}

// Reader feeds a Handler from the CDC log.
type Reader struct {
	cfg    Config
	handle Handler
}

// New returns a reader; nothing is read until Serve.
func New(cfg Config, handle Handler) *Reader {
	cfg.defaults()
	return &Reader{cfg: cfg, handle: handle}
}

// Serve reads until ctx ends (then it returns nil), the handler fails or
// the library does (then it returns the error). Either way it saves the
// progress of what was handled before it returns.
func (r *Reader) Serve(ctx context.Context) error {
	table, err := scyllacdc.NewTableBackedProgressManager(r.cfg.Session, r.cfg.Keyspace+".cdc_progress", r.cfg.App)
	if err != nil {
		return fmt.Errorf("cdc: progress table: %w", err)
	}
	// Progress must outlive the log it points into: with the library's
	// fixed week, a longer CDC TTL and a long outage would restart from the
	// oldest change and hand everything again.
	table.SetTTL(int32(min(r.cfg.MaxAge+24*time.Hour, 365*24*time.Hour) / time.Second))
	progress := newSaver(table, r.cfg.Margin)
	defer func() {
		// ctx may be over: the last write gets a time of its own.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopFlushTimeout)
		defer cancel()
		if ferr := progress.flush(fctx); ferr != nil {
			r.cfg.Log.Warn("cdc: save progress on stop; a restart reads again from the previous save", zap.Error(ferr))
		}
	}()

	reader, err := scyllacdc.NewReader(ctx, &scyllacdc.ReaderConfig{
		Session:               r.cfg.Session,
		TableNames:            []string{r.cfg.Keyspace + "." + r.cfg.Table},
		ChangeConsumerFactory: factory{r},
		ProgressManager:       progress,
		Logger:                zapPrintf{r.cfg.Log},
		Advanced:              r.cfg.advanced(),
	})
	if err != nil {
		return fmt.Errorf("cdc: reader for %s: %w", r.cfg.App, err)
	}
	saving, stopSaving := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		progress.run(saving, r.cfg.SaveEvery, r.cfg.Log)
	}()
	defer func() { stopSaving(); <-done }() // before the last flush above

	stop := context.AfterFunc(ctx, reader.Stop)
	defer stop()
	if err := reader.Run(ctx); err != nil && ctx.Err() == nil {
		return fmt.Errorf("cdc: %s: %w", r.cfg.App, err)
	}
	return nil
}

// factory makes a consumer per stream. It never fails: the library logs a
// factory's error and later panics on the nil consumer.
type factory struct{ r *Reader }

func (f factory) CreateChangeConsumer(_ context.Context, in scyllacdc.CreateChangeConsumerInput) (scyllacdc.ChangeConsumer, error) {
	pr := in.ProgressReporter
	return &consumer{r: f.r, mark: func(ctx context.Context, at gocql.UUID) error {
		return pr.MarkProgress(ctx, scyllacdc.Progress{LastProcessedRecordTime: at})
	}}, nil
}

// consumer reads one stream. The library calls it from one goroutine at a
// time.
type consumer struct {
	r *Reader
	// mark records the stream's progress at a point, in memory (the
	// library's ProgressReporter, onto the saver).
	mark func(ctx context.Context, at gocql.UUID) error
	// pending are the stream's points not yet marked, in time order: a
	// change whose handling is not acknowledged yet, or a point after it.
	pending []pending
}

// pending is a point of a stream's log: a change's time, with the channel
// that closes once the feed handled it (nil: nothing to wait for), or the
// end of an empty window.
type pending struct {
	at  gocql.UUID
	ack <-chan struct{}
}

// Consume hands a change's events to the handler, and marks the stream's
// progress past it, in memory (see saver), once the handler's channel
// closed, that is once the feed has handled them: a handover or a crash
// in between reads the change again, never skips it.
func (c *consumer) Consume(ctx context.Context, change scyllacdc.Change) error {
	rows := make([]row, len(change.Delta))
	for i, d := range change.Delta {
		rows[i] = d
	}
	events, err := eventsOf(rows)
	if err != nil {
		return err
	}
	for i, e := range events {
		if c.r.cfg.Upcaster != nil {
			if events[i], err = c.r.cfg.Upcaster.Upcast(e); err != nil {
				return err
			}
		}
	}
	var ack <-chan struct{}
	if len(events) > 0 {
		if ack, err = c.r.handle(ctx, events); err != nil {
			return err
		}
	}
	c.pending = append(c.pending, pending{at: change.Time, ack: ack})
	return c.release(ctx)
}

// Empty marks progress for a stream that had nothing in a window, so that
// a restart does not read an idle stream's whole past again, once the
// changes before it are handled. It costs no write: the saver writes the
// latest mark every SaveEvery.
func (c *consumer) Empty(ctx context.Context, ack gocql.UUID) error {
	c.pending = append(c.pending, pending{at: ack})
	return c.release(ctx)
}

// release marks the stream's progress at the last pending point whose
// change, and every one before it, was handled. A point whose change is
// still in the feed's hands stays pending until a later call finds it
// handled: the mark lags, which a restart pays for by reading again.
func (c *consumer) release(ctx context.Context) error {
	n := 0
	for _, p := range c.pending {
		if !closed(p.ack) {
			break
		}
		n++
	}
	if n == 0 {
		return nil
	}
	at := c.pending[n-1].at
	c.pending = append(c.pending[:0], c.pending[n:]...)
	return c.mark(ctx, at)
}

// closed reports whether ack is nil or closed, without waiting.
func closed(ack <-chan struct{}) bool {
	if ack == nil {
		return true
	}
	select {
	case <-ack:
		return true
	default:
		return false
	}
}

// End is called when the stream's generation ends: it waits, for up to
// stopFlushTimeout, until the changes still in the feed's hands are
// handled, and marks them, so that the generation is not left with a mark
// behind. What is still pending after that is read again on a restart
// only if its generation is still the saved one; otherwise the feed's
// recent pass delivers it.
func (c *consumer) End() error {
	deadline := time.After(stopFlushTimeout)
	for _, p := range c.pending {
		if p.ack == nil {
			continue
		}
		select {
		case <-p.ack:
		case <-deadline:
			return nil
		}
	}
	return c.release(context.Background())
}

// zapPrintf passes the library's messages on: its errors and its
// "can't keep up" warnings as warnings (it retries them itself, so they are
// otherwise invisible), the rest at debug level.
type zapPrintf struct{ log *zap.Logger }

func (z zapPrintf) Printf(format string, v ...interface{}) {
	msg := fmt.Sprintf(format, v...)
	if l := strings.ToLower(msg); strings.Contains(l, "error") || strings.Contains(l, "keep up") || strings.Contains(l, "not found") {
		z.log.Warn(msg)
		return
	}
	z.log.Debug(msg)
}

// The library calls Empty only on consumers that have it.
var _ scyllacdc.ChangeOrEmptyNotificationConsumer = (*consumer)(nil)
