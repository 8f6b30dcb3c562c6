// Package cdc is the ScyllaDB backend's change feed: it reads the CDC log of
// the events table with scylla-cdc-go and hands each committed append, as
// events in sequence order, to a consumer such as the relay or the
// projector. Each consumer reads under its own application name, so each
// keeps its own progress in the library's progress table.
//
// Delivery is at least once: progress is saved only after the handler
// returned, so a crash hands the same events again. Within a CDC stream
// changes come in time order, and an aggregate's events all live in one
// partition, hence one stream: an aggregate's appends arrive in order.
package cdc

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// Handler acts on the events of one append, in sequence order. An error
// stops the reader, which is restarted by its supervisor from the last
// saved progress.
type Handler func(ctx context.Context, events []store.Event) error

// Config configures a Reader. Zero durations take the defaults in
// brackets, chosen for latency; the library's own (a 30 s window, 10-30 s
// delays) put a minute between a command and its consumers.
type Config struct {
	Session  *gocql.Session
	Keyspace string
	Table    string // the events table ["events"]
	App      string // the consumer's name, which keys its progress

	// Window is how old a change must be before it is read [2s]. Scylla is
	// eventually consistent: a write can reach the CDC log after a later
	// one, and the reader skips whatever lands behind what it has read. The
	// window must cover the longest write (the write timeout, an LWT's
	// retries) plus the clock skew between nodes; too small a window loses
	// changes, which the projector heals from the events table but the
	// relay would not publish.
	Window time.Duration
	// PollDelay is the wait after a query that found changes [250ms];
	// IdleDelay after one that found none [1s].
	PollDelay, IdleDelay time.Duration
	// MaxAge is how far back a reader with no progress starts [7 days, the
	// default CDC TTL]: a new consumer sees every change the log still has,
	// where the library's default would start a minute ago.
	MaxAge time.Duration

	Upcaster store.Upcaster // applied to every event; nil for none
	Log      *zap.Logger
}

func (c *Config) defaults() {
	if c.Table == "" {
		c.Table = "events"
	}
	if c.Window <= 0 {
		c.Window = 2 * time.Second
	}
	if c.PollDelay <= 0 {
		c.PollDelay = 250 * time.Millisecond
	}
	if c.IdleDelay <= 0 {
		c.IdleDelay = time.Second
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 7 * 24 * time.Hour
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
}

// Reader feeds a Handler from the CDC log.
type Reader struct {
	cfg    Config
	handle Handler
	last   atomic.Int64 // unix nanos of the last change handled
}

// New returns a reader; nothing is read until Serve.
func New(cfg Config, handle Handler) *Reader {
	cfg.defaults()
	return &Reader{cfg: cfg, handle: handle}
}

// LastChange returns when the last change handled was written, zero before
// the first.
func (r *Reader) LastChange() time.Time {
	if n := r.last.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Serve reads until ctx ends (then it returns nil) or the library fails.
func (r *Reader) Serve(ctx context.Context) error {
	progress, err := scyllacdc.NewTableBackedProgressManager(r.cfg.Session, r.cfg.Keyspace+".cdc_progress", r.cfg.App)
	if err != nil {
		return fmt.Errorf("cdc: progress table: %w", err)
	}
	// Progress must outlive the log it points into: with the library's
	// fixed week, a longer CDC TTL and a long outage would restart from the
	// oldest change and hand everything again.
	progress.SetTTL(int32(min(r.cfg.MaxAge+24*time.Hour, 365*24*time.Hour) / time.Second))
	reader, err := scyllacdc.NewReader(ctx, &scyllacdc.ReaderConfig{
		Session:               r.cfg.Session,
		TableNames:            []string{r.cfg.Keyspace + "." + r.cfg.Table},
		ChangeConsumerFactory: factory{r},
		ProgressManager:       progress,
		Logger:                zapPrintf{r.cfg.Log},
		Advanced: scyllacdc.AdvancedReaderConfig{
			ConfidenceWindowSize:   r.cfg.Window,
			PostNonEmptyQueryDelay: r.cfg.PollDelay,
			PostEmptyQueryDelay:    r.cfg.IdleDelay,
			ChangeAgeLimit:         r.cfg.MaxAge,
			// A consumer with no progress walks the log from MaxAge ago one
			// query window at a time, with a delay after each empty one: at
			// the library's 30 s windows a week of log takes hours. Queries
			// are paged, so a wide window only costs what it finds.
			QueryTimeWindowSize: time.Hour,
		},
	})
	if err != nil {
		return fmt.Errorf("cdc: reader for %s: %w", r.cfg.App, err)
	}
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
	return &consumer{r: f.r, progress: in.ProgressReporter}, nil
}

type consumer struct {
	r        *Reader
	progress *scyllacdc.ProgressReporter
}

// Consume hands a change's events to the handler, then saves progress past
// it: a crash in between hands them again.
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
	if len(events) > 0 {
		if err := c.r.handle(ctx, events); err != nil {
			return err
		}
		c.r.last.Store(time.Unix(0, change.GetCassandraTimestamp()*1000).UnixNano())
	}
	return c.progress.MarkProgress(ctx, scyllacdc.Progress{LastProcessedRecordTime: change.Time})
}

// Empty saves progress for a stream that had nothing in a window, so that
// idle streams do not make a restart read their whole window again.
func (c *consumer) Empty(ctx context.Context, ack gocql.UUID) error {
	return c.progress.MarkProgress(ctx, scyllacdc.Progress{LastProcessedRecordTime: ack})
}

// End is called when the stream's generation ends.
func (c *consumer) End() error { return nil }

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
