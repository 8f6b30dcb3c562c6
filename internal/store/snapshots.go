package store

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Snapshots keeps aggregate snapshots: an aggregate's state at one version,
// encoded by the domain, so that a load replays only the events after it.
//
// Snapshots are a cache. The events stay the truth: a snapshot may be
// missing, stale or of a state schema the domain no longer reads, and the
// domain then replays the events instead. Deleting every snapshot changes
// no answer, only the time loads take. So a backend needs no transaction
// with the events, and a lost Save costs nothing but a longer next load.
type Snapshots interface {
	// Save stores s beside the aggregate's other snapshots, replacing the
	// one of the same version if any. Keeping the older ones lets a read of
	// an older version (time travel) start from a snapshot too.
	Save(ctx context.Context, s Snapshot) error

	// Latest returns the snapshot of aggregateID with the highest Version
	// at or below atOrBelow, and true; false when there is none. It returns
	// ErrClosed after the backend is closed.
	Latest(ctx context.Context, aggregateID uuid.UUID, atOrBelow int64) (Snapshot, bool, error)
}

// Snapshot is an aggregate's state after its event at Version.
type Snapshot struct {
	AggregateID   uuid.UUID
	AggregateType string
	Version       int64 // the sequence of the last event the state includes, ≥ 1
	// StateVersion is the schema version of State: the domain ignores a
	// snapshot whose StateVersion is not its current one.
	StateVersion int
	State        []byte    // opaque to the store; comes back byte-equal
	TakenAt      time.Time // UTC; kept to the millisecond at least
}
