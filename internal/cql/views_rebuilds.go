package cql

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel"
)

// rebuildsPartition is the one partition of read_model_rebuilds: every
// rebuild and the lock (running) in it, so that Begin is one conditional
// batch.
const rebuildsPartition = "rebuilds"

const (
	rebuildFields = `state, generation, from_generation, events_done, events_total, error, runner,
		requested_at, started_at, updated_at, ended_at`

	lockCQL          = `UPDATE read_model_rebuilds SET running = ? WHERE catalog = ? IF running = null`
	insertRebuildCQL = `INSERT INTO read_model_rebuilds (catalog, id, cancel_requested, ` + rebuildFields + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	lockHolderCQL    = `SELECT running FROM read_model_rebuilds WHERE catalog = ? LIMIT 1`
	releaseCQL       = `UPDATE read_model_rebuilds SET running = null WHERE catalog = ? IF running = ?`
	saveCQL          = `UPDATE read_model_rebuilds SET state = ?, generation = ?, from_generation = ?, events_done = ?,
		events_total = ?, error = ?, runner = ?, requested_at = ?, started_at = ?, updated_at = ?, ended_at = ?
		WHERE catalog = ? AND id = ?`
	selectRebuildCQL  = `SELECT id, cancel_requested, ` + rebuildFields + ` FROM read_model_rebuilds WHERE catalog = ? AND id = ?`
	selectRebuildsCQL = `SELECT id, cancel_requested, ` + rebuildFields + ` FROM read_model_rebuilds WHERE catalog = ?`
)

// cancelCQL sets cancel_requested on a rebuild that has not ended.
var cancelCQL = `UPDATE read_model_rebuilds SET cancel_requested = true WHERE catalog = ? AND id = ?
	IF state IN ('` + strings.Join([]string{
	string(readmodel.RebuildPending), string(readmodel.RebuildReplaying),
	string(readmodel.RebuildCatchingUp), string(readmodel.RebuildSwitching),
}, "', '") + `')`

// beginAttempts bounds Begin's rounds: one normally, two when it cleared
// the lock of a rebuild that had ended; more means other Begins keep
// winning, and the last one's answer stands.
const beginAttempts = 3

// Begin records r as the rebuild to run, in one conditional batch that
// takes the lock (read_model_rebuilds.running) when nobody holds it and
// inserts r: of concurrent Begins, on any instances, exactly one wins, and
// only the winner is recorded. When another rebuild holds the lock, Begin
// returns it and false. A holder that has ended (its final state saved but
// the lock not released, which Save does in the same batch, so only a hand
// edit leaves it so) loses the lock, conditionally on still holding it,
// and Begin tries again. It returns an error when Cassandra fails.
func (c *Catalog) Begin(ctx context.Context, r readmodel.Rebuild) (readmodel.Rebuild, bool, error) {
	for attempt := 1; ; attempt++ {
		b := c.session.Session.NewBatch(gocql.LoggedBatch).WithContext(ctx)
		b.SetConsistency(c.consistency)
		b.SerialConsistency(c.serial)
		b.Query(lockCQL, r.ID, rebuildsPartition)
		b.Query(insertRebuildCQL, append([]any{rebuildsPartition, r.ID, r.CancelRequested}, fieldsOf(r)...)...)
		current := map[string]any{}
		applied, iter, err := c.session.Session.MapExecuteBatchCAS(b, current)
		if iter != nil {
			_ = iter.Close()
		}
		if err != nil && casUncertain(err) && ctx.Err() == nil {
			// The batch may or may not have been applied: a serial read of
			// the lock, which completes a Paxos round in progress, says.
			applied, err = c.holds(ctx, r.ID)
		}
		if err != nil {
			return readmodel.Rebuild{}, false, fmt.Errorf("scylla: views: begin rebuild %s: %w", r.ID, err)
		}
		if applied {
			return r, true, nil
		}
		holder, ok := current["running"].(gocql.UUID)
		if !ok || holder == (gocql.UUID{}) {
			// The lock was released between the condition and the answer's
			// read of it: try again.
			if attempt < beginAttempts {
				continue
			}
			return readmodel.Rebuild{}, false, fmt.Errorf("scylla: views: begin rebuild %s: the lock keeps changing hands", r.ID)
		}
		running, err := c.rebuild(ctx, uuid.UUID(holder), c.serial)
		if errors.Is(err, readmodel.ErrNotFound) {
			running = readmodel.Rebuild{ID: uuid.UUID(holder), State: readmodel.RebuildFailed} // deleted by hand: it will never end
		} else if err != nil {
			return readmodel.Rebuild{}, false, fmt.Errorf("scylla: views: begin rebuild %s: read rebuild %s holding the lock: %w", r.ID, holder, err)
		}
		if !running.State.Ended() || attempt == beginAttempts {
			return running, false, nil
		}
		if _, err := c.release(ctx, running.ID); err != nil {
			return readmodel.Rebuild{}, false, fmt.Errorf("scylla: views: begin rebuild %s: release the lock of ended rebuild %s: %w", r.ID, holder, err)
		}
		c.log.Warn("released the rebuild lock of a rebuild that had ended without releasing it",
			zap.Stringer("rebuild_id", running.ID), zap.String("state", string(running.State)))
	}
}

// holds reports whether rebuild id holds the lock, read serially.
func (c *Catalog) holds(ctx context.Context, id uuid.UUID) (bool, error) {
	var running *gocql.UUID
	err := c.session.Session.Query(lockHolderCQL, rebuildsPartition).WithContext(ctx).
		Consistency(c.serial).Idempotent(true).Scan(&running)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read the lock: %w", err)
	}
	return running != nil && uuid.UUID(*running) == id, nil
}

// release clears the lock if id holds it, reporting whether it did.
func (c *Catalog) release(ctx context.Context, id uuid.UUID) (bool, error) {
	q := c.session.Session.Query(releaseCQL, rebuildsPartition, id).WithContext(ctx).
		Consistency(c.consistency).SerialConsistency(c.serial)
	return q.MapScanCAS(map[string]any{})
}

// Save records every field of r but CancelRequested, as a lightweight
// transaction on r's row (IF EXISTS). Saving a final state also releases
// the lock, in the same batch, when r holds it. It returns an error
// wrapping readmodel.ErrNotFound when r was never begun, and an error when
// Cassandra fails.
func (c *Catalog) Save(ctx context.Context, r readmodel.Rebuild) error {
	args := append(fieldsOf(r), rebuildsPartition, r.ID)
	if r.State.Ended() {
		b := c.session.Session.NewBatch(gocql.LoggedBatch).WithContext(ctx)
		b.SetConsistency(c.consistency)
		b.SerialConsistency(c.serial)
		b.Query(releaseCQL, rebuildsPartition, r.ID)
		b.Query(saveCQL, args...)
		applied, iter, err := c.session.Session.MapExecuteBatchCAS(b, map[string]any{})
		if iter != nil {
			_ = iter.Close()
		}
		if err != nil {
			return fmt.Errorf("scylla: views: save rebuild %s: %w", r.ID, err)
		}
		if applied {
			return nil
		}
		// r does not hold the lock (saved ended before, or lost it to a
		// Begin that found it ended): save it alone.
	}
	q := c.session.Session.Query(saveCQL+` IF EXISTS`, args...).WithContext(ctx).
		Consistency(c.consistency).SerialConsistency(c.serial)
	applied, err := q.MapScanCAS(map[string]any{})
	if err != nil {
		return fmt.Errorf("scylla: views: save rebuild %s: %w", r.ID, err)
	}
	if !applied {
		return fmt.Errorf("scylla: views: save rebuild %s: %w", r.ID, readmodel.ErrNotFound)
	}
	return nil
}

// Cancel sets CancelRequested on rebuild id unless it has ended, and
// returns the rebuild as it is then. It returns an error wrapping
// readmodel.ErrNotFound for an unknown id, and an error when Cassandra
// fails.
func (c *Catalog) Cancel(ctx context.Context, id uuid.UUID) (readmodel.Rebuild, error) {
	q := c.session.Session.Query(cancelCQL, rebuildsPartition, id).WithContext(ctx).
		Consistency(c.consistency).SerialConsistency(c.serial)
	if _, err := q.MapScanCAS(map[string]any{}); err != nil {
		return readmodel.Rebuild{}, fmt.Errorf("scylla: views: cancel rebuild %s: %w", id, err)
	}
	// Applied or not (unknown, or ended), the row as it is now says which.
	r, err := c.rebuild(ctx, id, c.consistency)
	if err != nil {
		return readmodel.Rebuild{}, fmt.Errorf("scylla: views: cancel rebuild %s: %w", id, err)
	}
	return r, nil
}

// Rebuild returns rebuild id, or an error wrapping readmodel.ErrNotFound.
// It returns an error when Cassandra fails.
func (c *Catalog) Rebuild(ctx context.Context, id uuid.UUID) (readmodel.Rebuild, error) {
	r, err := c.rebuild(ctx, id, c.consistency)
	if err != nil {
		return readmodel.Rebuild{}, fmt.Errorf("scylla: views: rebuild %s: %w", id, err)
	}
	return r, nil
}

// Last returns the rebuild with the greatest RequestedAt, or an error
// wrapping readmodel.ErrNotFound when none was ever begun. It reads every
// rebuild: a handful over the life of a keyspace, in one partition. It
// returns an error when Cassandra fails.
func (c *Catalog) Last(ctx context.Context) (readmodel.Rebuild, error) {
	iter := c.session.Session.Query(selectRebuildsCQL, rebuildsPartition).WithContext(ctx).
		Consistency(c.consistency).Idempotent(true).Iter()
	var (
		last  readmodel.Rebuild
		found bool
	)
	for {
		r, ok := scanRebuild(iter)
		if !ok {
			break
		}
		if !found || r.RequestedAt.After(last.RequestedAt) {
			last, found = r, true
		}
	}
	if err := iter.Close(); err != nil {
		return readmodel.Rebuild{}, fmt.Errorf("scylla: views: last rebuild: %w", err)
	}
	if !found {
		return readmodel.Rebuild{}, fmt.Errorf("scylla: views: last rebuild: %w", readmodel.ErrNotFound)
	}
	return last, nil
}

// rebuild reads rebuild id at consistency cons, or returns
// readmodel.ErrNotFound.
func (c *Catalog) rebuild(ctx context.Context, id uuid.UUID, cons gocql.Consistency) (readmodel.Rebuild, error) {
	iter := c.session.Session.Query(selectRebuildCQL, rebuildsPartition, id).WithContext(ctx).
		Consistency(cons).Idempotent(true).Iter()
	r, ok := scanRebuild(iter)
	if err := iter.Close(); err != nil {
		return readmodel.Rebuild{}, err
	}
	if !ok {
		return readmodel.Rebuild{}, readmodel.ErrNotFound
	}
	return r, nil
}

// scanRebuild scans the next row of a select of id, cancel_requested and
// rebuildFields, reporting false when there is none. A partition that
// holds only the lock has a row with no id, which it skips.
func scanRebuild(iter *gocql.Iter) (readmodel.Rebuild, bool) {
	for {
		var (
			r     readmodel.Rebuild
			id    *gocql.UUID
			state string
		)
		if !iter.Scan(&id, &r.CancelRequested, &state, &r.Generation, &r.From, &r.EventsDone, &r.EventsTotal,
			&r.Error, &r.Runner, &r.RequestedAt, &r.StartedAt, &r.UpdatedAt, &r.EndedAt) {
			return readmodel.Rebuild{}, false
		}
		if id == nil {
			continue
		}
		r.ID, r.State = uuid.UUID(*id), readmodel.RebuildState(state)
		r.RequestedAt, r.StartedAt = utcOrZero(r.RequestedAt), utcOrZero(r.StartedAt)
		r.UpdatedAt, r.EndedAt = utcOrZero(r.UpdatedAt), utcOrZero(r.EndedAt)
		return r, true
	}
}

// fieldsOf returns r's values for rebuildFields, times at the millisecond
// that CQL keeps and empty ones null.
func fieldsOf(r readmodel.Rebuild) []any {
	return []any{string(r.State), r.Generation, r.From, r.EventsDone, r.EventsTotal, r.Error, r.Runner,
		nullTime(r.RequestedAt), nullTime(r.StartedAt), nullTime(r.UpdatedAt), nullTime(r.EndedAt)}
}

// nullTime is t, or null for the zero time.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// utcOrZero returns t in UTC, and the zero time exactly for a null (which
// the driver reads as the zero time) or the epoch a zero would have been.
func utcOrZero(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}
