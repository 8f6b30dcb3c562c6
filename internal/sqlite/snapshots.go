package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// Snapshots is a store.Snapshots on a SQLite file of its own
// (snapshots.db beside events.db). It is safe for concurrent use.
//
// Why its own file: as for Keys, a snapshot written into events.db would
// hold the lock the event writer's group commit needs. And being a cache it
// runs with synchronous=NORMAL: a snapshot lost to a power cut costs a
// longer load, nothing else.
type Snapshots struct {
	w, r   *sql.DB
	closed atomic.Bool
}

// OpenSnapshots opens (creating if needed) the snapshot store at path and
// brings its schema up to date. The caller must Close it.
func OpenSnapshots(ctx context.Context, path string) (*Snapshots, error) {
	w, r, err := openDB(ctx, path, "sqlite/snapshots", dbOptions{Synchronous: "NORMAL"})
	if err != nil {
		return nil, fmt.Errorf("sqlite: snapshots: %w", err)
	}
	return &Snapshots{w: w, r: r}, nil
}

// Close closes the database. Calls after Close return store.ErrClosed.
func (s *Snapshots) Close() error {
	if s.closed.Swap(true) {
		return store.ErrClosed
	}
	if err := errors.Join(s.r.Close(), s.w.Close()); err != nil {
		return fmt.Errorf("sqlite: snapshots: close: %w", err)
	}
	return nil
}

// Save stores snap, replacing the snapshot of the same aggregate and
// version. It returns store.ErrClosed after Close.
func (s *Snapshots) Save(ctx context.Context, snap store.Snapshot) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	_, err := s.w.ExecContext(ctx, `INSERT OR REPLACE INTO snapshots
		(aggregate_id, version, aggregate_type, state_version, state, taken_at) VALUES (?, ?, ?, ?, ?, ?)`,
		snap.AggregateID.String(), snap.Version, snap.AggregateType, snap.StateVersion, snap.State, formatTime(snap.TakenAt))
	if err != nil {
		return fmt.Errorf("sqlite: save snapshot %s@%d: %w", snap.AggregateID, snap.Version, err)
	}
	return nil
}

// Latest returns the newest snapshot of aggregateID at or below atOrBelow.
// It returns store.ErrClosed after Close.
func (s *Snapshots) Latest(ctx context.Context, aggregateID uuid.UUID, atOrBelow int64) (store.Snapshot, bool, error) {
	if s.closed.Load() {
		return store.Snapshot{}, false, store.ErrClosed
	}
	snap := store.Snapshot{AggregateID: aggregateID}
	var taken string
	err := s.r.QueryRowContext(ctx, `SELECT version, aggregate_type, state_version, state, taken_at
		FROM snapshots WHERE aggregate_id = ? AND version <= ? ORDER BY version DESC LIMIT 1`,
		aggregateID.String(), atOrBelow).Scan(&snap.Version, &snap.AggregateType, &snap.StateVersion, &snap.State, &taken)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.Snapshot{}, false, nil
	case err != nil:
		return store.Snapshot{}, false, fmt.Errorf("sqlite: latest snapshot of %s: %w", aggregateID, err)
	}
	if snap.TakenAt, err = parseTime(taken); err != nil {
		return store.Snapshot{}, false, fmt.Errorf("sqlite: latest snapshot of %s: %w", aggregateID, err)
	}
	return snap, true, nil
}

var _ store.Snapshots = (*Snapshots)(nil)
