package cql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// The statements on snapshots. A snapshot is a cache, so plain writes at
// Config.Consistency do: two saves of one version write the same state, and
// the last one wins.
const (
	snapshotSaveCQL = `INSERT INTO snapshots (aggregate_id, version, aggregate_type, state_version, state, taken_at)
		VALUES (?, ?, ?, ?, ?, ?)`
	// The partition clusters newest first, so the first row of the slice
	// is the one.
	snapshotLatestCQL = `SELECT version, aggregate_type, state_version, state, taken_at FROM snapshots
		WHERE aggregate_id = ? AND version <= ? LIMIT 1`
)

// Save stores snap, replacing the snapshot of the same aggregate and
// version. It returns store.ErrClosed after Close.
func (s *Store) Save(ctx context.Context, snap store.Snapshot) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	err := s.sess.Session.Query(snapshotSaveCQL, gocqlUUID(snap.AggregateID), snap.Version, snap.AggregateType,
		snap.StateVersion, snap.State, snap.TakenAt.UTC()).WithContext(ctx).Idempotent(true).Exec()
	if err != nil {
		return fmt.Errorf("scylla: save snapshot %s@%d: %w", snap.AggregateID, snap.Version, s.closedOr(ctx, err))
	}
	return nil
}

// Latest returns the newest snapshot of aggregateID at or below atOrBelow.
// It returns store.ErrClosed after Close.
func (s *Store) Latest(ctx context.Context, aggregateID uuid.UUID, atOrBelow int64) (store.Snapshot, bool, error) {
	if s.closed.Load() {
		return store.Snapshot{}, false, store.ErrClosed
	}
	snap := store.Snapshot{AggregateID: aggregateID}
	var taken time.Time
	err := s.sess.Session.Query(snapshotLatestCQL, gocqlUUID(aggregateID), atOrBelow).WithContext(ctx).
		Idempotent(true).Scan(&snap.Version, &snap.AggregateType, &snap.StateVersion, &snap.State, &taken)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return store.Snapshot{}, false, nil
	case err != nil:
		return store.Snapshot{}, false, fmt.Errorf("scylla: latest snapshot of %s: %w", aggregateID, s.closedOr(ctx, err))
	}
	snap.TakenAt = taken.UTC()
	return snap, true, nil
}

var _ store.Snapshots = (*Store)(nil)
