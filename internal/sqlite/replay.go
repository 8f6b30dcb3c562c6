package sqlite

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/store"
)

// replayBatch is how many events Replay reads per query and hands per
// batch: large enough that a handler's per-batch cost (a transaction) is
// spread thin, small enough to keep a few of them in memory.
const replayBatch = 4096

// Replay hands h every event with a position above after, up to the head
// at the call, in position order, and returns that head: the mark of a
// next Replay. One goroutine reads the next batch while h handles the
// current one, so reading and handling overlap on two cores.
func (s *Store) Replay(ctx context.Context, after int64, h store.Handler) (int64, error) {
	head, err := s.Head(ctx)
	if err != nil {
		return after, fmt.Errorf("sqlite: replay: %w", err)
	}
	if head <= after {
		return after, nil
	}
	g, gctx := errgroup.WithContext(ctx)
	batches := make(chan []store.Event, 1)
	g.Go(func() error {
		defer close(batches)
		for pos := after; pos < head; {
			evs, err := s.query(gctx, s.feedQ, pos, replayBatch)
			if err != nil {
				return fmt.Errorf("sqlite: replay after %d: %w", pos, err)
			}
			for len(evs) > 0 && evs[len(evs)-1].Position > head {
				evs = evs[:len(evs)-1] // committed after the call
			}
			if len(evs) == 0 {
				return nil
			}
			select {
			case batches <- evs:
			case <-gctx.Done():
				return gctx.Err()
			}
			pos = evs[len(evs)-1].Position
		}
		return nil
	})
	g.Go(func() error {
		for evs := range batches {
			if err := h(gctx, evs); err != nil {
				return fmt.Errorf("sqlite: replay: handle events %d..%d: %w", evs[0].Position, evs[len(evs)-1].Position, err)
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return after, err
	}
	return head, nil
}

// Count returns the number of events: positions are AUTOINCREMENT, taken
// inside the append's transaction, so the head position counts them.
func (s *Store) Count(ctx context.Context) (int64, error) {
	return s.Head(ctx)
}

var _ store.Log = (*Store)(nil)
