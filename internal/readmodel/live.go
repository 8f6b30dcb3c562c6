package readmodel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/store"
)

// Live is the read models as queries and the projector see them: the
// current generation, which every read goes to, and during a rebuild the
// generations written beside it. It is a Views and, with Apply, the
// projector's store.Handler.
//
// During a rebuild's catch-up the next generation is written before the
// current one, and after the switch the new current one before the old:
// the newer generation is always written first, so no row of it is ever
// behind the same row of the older one, and a reader moved from the old
// to the new never sees a row go back.
type Live struct {
	cur atomic.Pointer[generation]

	// mu is held by Apply for a whole batch and by the switches between
	// generations, so that a switch falls between two batches.
	mu   sync.Mutex
	next *follower // written before cur: the generation a rebuild catches up
	old  *follower // written after cur: the one a switch left, for a grace
	load store.Loader
	log  *zap.Logger
}

// generation is a Generation and its number.
type generation struct {
	n int64
	g Generation
}

// follower is a generation written beside the current one, and the first
// error writing it met (after which it is written no more).
type follower struct {
	generation
	err error
}

// NewLive returns the read models with generation n, g, current. load
// fills in, from the events, the aggregates a generation under rebuild has
// not reached yet (see Follow).
func NewLive(n int64, g Generation, load store.Loader, log *zap.Logger) *Live {
	l := &Live{load: load, log: log}
	l.cur.Store(&generation{n, g})
	return l
}

// Current returns the number of the generation reads go to.
func (l *Live) Current() int64 { return l.cur.Load().n }

// Order reads the current generation.
func (l *Live) Order(ctx context.Context, id uuid.UUID) (Order, error) {
	return l.cur.Load().g.Order(ctx, id)
}

// Customer reads the current generation.
func (l *Live) Customer(ctx context.Context, id uuid.UUID) (Customer, error) {
	return l.cur.Load().g.Customer(ctx, id)
}

// CustomerOrders reads the current generation.
func (l *Live) CustomerOrders(ctx context.Context, customerID, after uuid.UUID, limit int) ([]OrderSummary, error) {
	return l.cur.Load().g.CustomerOrders(ctx, customerID, after, limit)
}

// Watch watches the current generation. A switch broadcasts to the
// readers of the generation it leaves, so that they watch again, here.
func (l *Live) Watch(id uuid.UUID) (<-chan struct{}, func()) {
	return l.cur.Load().g.Watch(id)
}

// Apply writes the batch to the generation under rebuild, if any, then to
// the current one, then to the one a switch left, if any. Only the
// current generation's error is Apply's: the others' errors end their
// writes and are the rebuild's to report (NextErr), never the projector's.
func (l *Live) Apply(ctx context.Context, events []store.Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.next; f != nil && f.err == nil {
		if f.err = l.catchUp(ctx, f.g, events); f.err != nil {
			l.log.Warn("rebuild: writing the new generation failed; the rebuild will fail",
				zap.Int64("generation", f.n), zap.Error(f.err))
		}
	}
	if err := l.cur.Load().g.Apply(ctx, events); err != nil {
		return err
	}
	if f := l.old; f != nil && f.err == nil {
		if f.err = f.g.Apply(ctx, events); f.err != nil {
			l.log.Warn("rebuild: writing the previous generation during its grace failed; other instances may read it behind until they switch",
				zap.Int64("generation", f.n), zap.Error(f.err))
		}
	}
	return nil
}

// catchUp applies events to g, a generation a rebuild is building. The
// rebuild's replay may not have reached an aggregate of the batch yet, so
// that g's row is behind its events (readmodel.ErrGap): then it applies
// those aggregates' whole histories first, which rows already past them
// ignore, and the batch again.
func (l *Live) catchUp(ctx context.Context, g Generation, events []store.Event) error {
	err := g.Apply(ctx, events)
	if !errors.Is(err, ErrGap) {
		return err
	}
	seen := map[uuid.UUID]bool{}
	for _, e := range events {
		if seen[e.AggregateID] || (e.AggregateType != aggregate.OrderType && e.AggregateType != aggregate.CustomerType) {
			continue
		}
		seen[e.AggregateID] = true
		history, err := l.load.Load(ctx, e.AggregateID, 0)
		if err != nil {
			return fmt.Errorf("load %s %s: %w", e.AggregateType, e.AggregateID, err)
		}
		if err := g.Apply(ctx, history); err != nil {
			return fmt.Errorf("apply the history of %s %s: %w", e.AggregateType, e.AggregateID, err)
		}
	}
	return g.Apply(ctx, events)
}

// Follow makes Apply write generation n, g, before the current one, from
// the next batch on, until Switch or Unfollow.
func (l *Live) Follow(n int64, g Generation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next = &follower{generation: generation{n, g}}
}

// NextErr returns the first error writing the followed generation met.
func (l *Live) NextErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next == nil {
		return nil
	}
	return l.next.err
}

// Switch makes the followed generation current, between two batches: it
// calls promote (the durable switch, Catalog.Promote) and, when promote
// succeeds, moves reads to the followed generation and keeps writing the
// previous one after it until Unfollow. It refuses, promoting nothing,
// when no generation is followed or writing it failed.
func (l *Live) Switch(promote func() error) error {
	l.mu.Lock()
	next := l.next
	switch {
	case next == nil:
		l.mu.Unlock()
		return errors.New("readmodel: switch: no generation is being built")
	case next.err != nil:
		l.mu.Unlock()
		return fmt.Errorf("readmodel: switch: writing generation %d failed: %w", next.n, next.err)
	}
	if err := promote(); err != nil {
		l.mu.Unlock()
		return err
	}
	prev := l.cur.Swap(&next.generation)
	l.next, l.old = nil, &follower{generation: *prev}
	l.mu.Unlock()
	prev.g.Broadcast()
	return nil
}

// Unfollow stops writing any generation but the current one.
func (l *Live) Unfollow() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next, l.old = nil, nil
}

// Adopt makes generation n, g, current without writing anything: what an
// instance does when another one promoted n. Generations only grow, so n
// at or below the current one changes nothing: a reading of the catalog
// taken before this instance's own switch cannot take it back.
func (l *Live) Adopt(n int64, g Generation) {
	l.mu.Lock()
	prev := l.cur.Load()
	if n <= prev.n {
		l.mu.Unlock()
		return
	}
	l.cur.Store(&generation{n, g})
	if l.next != nil && l.next.n <= n {
		l.next = nil // the generation it followed is current now
	}
	l.mu.Unlock()
	prev.g.Broadcast()
}

// followed returns the generation written before the current one, 0 when
// none is.
func (l *Live) followed() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next == nil {
		return 0
	}
	return l.next.n
}

// unfollowNext stops writing generation n before the current one, if it is
// the one written.
func (l *Live) unfollowNext(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next != nil && l.next.n == n {
		l.next = nil
	}
}

// Track adopts, every interval until ctx ends, the generation the catalog
// says is current, so that an instance follows a switch another instance
// made. Errors are logged and tried again at the next interval.
//
// It also writes, while a rebuild another instance runs is catching up
// (or switching), the generation that rebuild builds (Follow), and stops
// once it has ended: a projector split into shards runs on several
// instances, and each one's batches must reach the new generation, not
// only those of the instance that runs the rebuild (which waits
// RebuildOptions.FollowWait for them before its catch-up).
func (l *Live) Track(ctx context.Context, c Catalog, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.adoptCurrent(ctx, c)
		l.followRebuild(ctx, c)
	}
}

func (l *Live) adoptCurrent(ctx context.Context, c Catalog) {
	n, err := c.Current(ctx)
	if err != nil || n <= l.Current() {
		if err != nil && ctx.Err() == nil {
			l.log.Warn("read models: reading the current generation failed", zap.Error(err))
		}
		return
	}
	g, err := c.Open(ctx, n)
	if err != nil {
		l.log.Warn("read models: opening the current generation failed", zap.Int64("generation", n), zap.Error(err))
		return
	}
	l.log.Info("read models: another instance switched generations", zap.Int64("from", l.Current()), zap.Int64("to", n))
	l.Adopt(n, g)
}

func (l *Live) followRebuild(ctx context.Context, c Catalog) {
	r, err := c.Last(ctx)
	switch {
	case errors.Is(err, ErrNotFound):
		return
	case err != nil:
		if ctx.Err() == nil {
			l.log.Warn("read models: reading the last rebuild failed", zap.Error(err))
		}
		return
	}
	following := l.followed()
	building := (r.State == RebuildCatchingUp || r.State == RebuildSwitching) && r.Generation > l.Current()
	switch {
	case building && following != r.Generation:
		g, err := c.Open(ctx, r.Generation)
		if err != nil {
			l.log.Warn("read models: opening the generation a rebuild builds failed", zap.Int64("generation", r.Generation), zap.Error(err))
			return
		}
		l.log.Info("read models: writing the generation another instance's rebuild builds", zap.Int64("generation", r.Generation))
		l.Follow(r.Generation, g)
	case following != 0 && (r.State.Ended() || r.Generation != following):
		l.unfollowNext(following)
	}
}

// Interface check.
var _ Views = (*Live)(nil)
