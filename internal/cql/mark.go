package cql

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/store"
)

// markWrites is how many progress writes MarkHandled has in flight.
const markWrites = 32

// MarkHandled sets the consumer's feed progress on each given aggregate to
// the given version, as if it had handled those events: its subscriptions
// then hand only what comes after. Like a subscription's own saves, a
// write never moves progress back (USING TIMESTAMP of the version).
func (s *Store) MarkHandled(ctx context.Context, consumer string, versions map[uuid.UUID]int64) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(markWrites)
	for id, v := range versions {
		g.Go(func() error {
			err := s.sess.Session.Query(progressSaveCQL, v, v, id, consumer).WithContext(gctx).Idempotent(true).Exec()
			if err != nil {
				return fmt.Errorf("scylla: mark %s handled on %s at %d: %w", consumer, id, v, s.closedOr(ctx, err))
			}
			return nil
		})
	}
	return g.Wait()
}
