package worker

import (
	"context"
	"sync"
	"time"

	"github.com/orderd/orderd/internal/store"
)

// DrainingFeed is the feed the workers subscribe to. It lets a graceful
// shutdown finish the work in flight: once Begin was called, a
// subscription whose context ends does not stop at once but keeps handing
// batches until its consumer has caught up with the head (where the
// backend's Lag is exact, as on SQLite, whose head stops moving once HTTP
// has drained), or, where Lag is not exact (CQL, where other instances
// keep appending), until the batch in hand is handled; at the latest until
// the drain's deadline, when the batch in flight is abandoned as before.
// The feed then saves the consumer's progress as it does at every stop.
//
// Only shutdown drains: a context that ends before Begin (the worker's
// lease lost, say) stops the subscription at once, so that an instance
// that lost its lease does not act beside its successor.
type DrainingFeed struct {
	store.Feed
	exact bool // Lag counts exactly what the consumer has not handled

	once     sync.Once
	started  chan struct{} // closed by Begin
	deadline time.Time
}

// NewDrainingFeed wraps feed. exact says that feed's Lag counts exactly
// what a consumer has not handled yet (SQLite's does; CQL's cannot, as
// other instances keep appending): then a drain runs until the consumer
// has caught up, otherwise it ends after the batch in hand.
func NewDrainingFeed(feed store.Feed, exact bool) *DrainingFeed {
	return &DrainingFeed{Feed: feed, exact: exact, started: make(chan struct{})}
}

// Begin makes the subscriptions whose contexts end from now on drain until
// deadline at the latest. Call it before ending the workers' context;
// calls after the first do nothing.
func (f *DrainingFeed) Begin(deadline time.Time) {
	f.once.Do(func() {
		f.deadline = deadline
		close(f.started)
	})
}

func (f *DrainingFeed) draining() bool {
	select {
	case <-f.started:
		return true
	default:
		return false
	}
}

// Subscribe is the inner feed's Subscribe under a context that outlives
// ctx by the drain. It returns what the inner Subscribe returns.
func (f *DrainingFeed) Subscribe(ctx context.Context, consumer string, h store.Handler) error {
	inner, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var (
		mu            sync.Mutex
		busy, stopped bool
	)
	// stop ends the subscription between two batches, never during one.
	stop := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if busy {
			return false
		}
		stopped = true
		cancel() // under mu: a batch refused below finds inner ended
		return true
	}
	handle := func(hctx context.Context, events []store.Event) error {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return context.Canceled // inner has ended: the feed stops cleanly
		}
		// Outside a drain the caller's context is asked itself, not only
		// through the watcher below: a lease's context says it lapsed the
		// moment its deadline passes, before any timer has fired.
		if err := ctx.Err(); err != nil && !f.draining() {
			stopped = true
			cancel()
			mu.Unlock()
			return err
		}
		busy = true
		mu.Unlock()
		defer func() {
			mu.Lock()
			busy = false
			mu.Unlock()
		}()
		return h(hctx, events)
	}

	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
		case <-inner.Done():
			return
		}
		if !f.draining() {
			cancel()
			return
		}
		limit := time.NewTimer(time.Until(f.deadline))
		defer limit.Stop()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if f.caughtUp(inner, consumer) && stop() {
				return
			}
			select {
			case <-limit.C:
				cancel()
				return
			case <-tick.C:
			case <-inner.Done():
				return
			}
		}
	}()
	err := f.Feed.Subscribe(inner, consumer, handle)
	cancel()
	<-watched
	return err
}

// caughtUp reports whether the consumer has nothing left to handle, as far
// as the drain can tell: without an exact Lag, the batch in hand is all.
func (f *DrainingFeed) caughtUp(ctx context.Context, consumer string) bool {
	if !f.exact {
		return true
	}
	lag, err := f.Lag(ctx, consumer)
	return err != nil || !lag.Known || lag.Events == 0
}
