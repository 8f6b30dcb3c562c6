// Package readmodel is the read side of orderd: a projector tails the event
// store's change feed and keeps the views that GET requests read, and
// Queries serves those views with read-your-writes waits.
//
// The package is backend-agnostic. Projection is a set of pure functions
// (Order.Apply, Customer.Apply); a backend such as readmodel/sqlite stores
// the rows and the projector's checkpoint.
package readmodel

import (
	"context"
	"fmt"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/store"
)

// DefaultBatchSize is how many feed events the projector applies per
// transaction unless WithBatchSize says otherwise.
const DefaultBatchSize = 256

// Writer is the part of a view backend the projector needs.
type Writer interface {
	// Checkpoint returns the feed position through which the views are up
	// to date, 0 when nothing has been projected.
	Checkpoint(ctx context.Context) (int64, error)

	// Apply projects events and moves the checkpoint to through, all or
	// nothing. Events already reflected in the views change nothing, so a
	// batch may be applied again after a crash.
	Apply(ctx context.Context, events []store.Event, through int64) error
}

// Projector keeps the views of a Writer up to date with a feed.
type Projector struct {
	feed  store.Feed
	w     Writer
	log   *zap.Logger
	batch int

	pos atomic.Int64
}

// Option configures a Projector.
type Option func(*Projector)

// WithBatchSize sets how many events are read and applied per transaction.
// Larger batches amortise the commit; smaller ones make each commit, and so
// each read-your-writes wake-up, come sooner. Values below 1 are ignored.
func WithBatchSize(n int) Option {
	return func(p *Projector) {
		if n > 0 {
			p.batch = n
		}
	}
}

// NewProjector returns a projector that reads feed and writes to w. It does
// nothing until Serve runs.
func NewProjector(feed store.Feed, w Writer, log *zap.Logger, opts ...Option) *Projector {
	p := &Projector{feed: feed, w: w, log: log, batch: DefaultBatchSize}
	for _, opt := range opts {
		opt(p)
	}
	return p
}

// Position returns the feed position of the last committed batch (the
// checkpoint as Serve last read or wrote it). Compared with the store's
// Head it gives the projection lag.
func (p *Projector) Position() int64 { return p.pos.Load() }

// Serve projects the feed from the writer's checkpoint until ctx ends, then
// returns nil. A batch already read when ctx ends is still committed, so the
// checkpoint only ever moves together with the rows it covers. Serve returns
// an error, and stops, when the feed, the writer or an event's decoding
// fails: skipping an event would leave the views silently wrong, so the
// supervisor reports it and restarts from the checkpoint instead.
func (p *Projector) Serve(ctx context.Context) error {
	pos, err := p.w.Checkpoint(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("readmodel: read checkpoint: %w", err)
	}
	p.pos.Store(pos)
	p.log.Info("projector starting", zap.Int64("position", pos), zap.Int("batch", p.batch))

	for {
		events, err := p.feed.ReadFeed(ctx, pos, p.batch)
		if err != nil {
			if ctx.Err() != nil {
				p.log.Info("projector stopped", zap.Int64("position", pos))
				return nil
			}
			return fmt.Errorf("readmodel: read feed after %d: %w", pos, err)
		}
		if len(events) == 0 {
			continue // the feed blocks until there are events; nothing to do
		}
		through := events[len(events)-1].Position
		if through <= pos {
			return fmt.Errorf("readmodel: feed after %d returned events through %d", pos, through)
		}
		// The batch is committed even if ctx ended while it was read: the
		// transaction is short, and finishing it makes shutdown leave the
		// checkpoint exactly at the last event it has projected.
		if err := p.w.Apply(context.WithoutCancel(ctx), p.projected(events), through); err != nil {
			return fmt.Errorf("readmodel: apply events %d..%d: %w", events[0].Position, through, err)
		}
		pos = through
		p.pos.Store(pos)
		p.log.Debug("projected batch", zap.Int("events", len(events)), zap.Int64("position", pos))
	}
}

// projected returns the events of aggregate types that have views. Others
// (types added for other consumers) are skipped; the checkpoint still moves
// past them because Apply gets the batch's last position.
func (p *Projector) projected(events []store.Event) []store.Event {
	out := events[:0:0]
	for _, e := range events {
		switch e.AggregateType {
		case aggregate.OrderType, aggregate.CustomerType:
			out = append(out, e)
		default:
			p.log.Debug("skipping event of unprojected aggregate type",
				zap.String("aggregate_type", e.AggregateType), zap.Int64("position", e.Position))
		}
	}
	return out
}
