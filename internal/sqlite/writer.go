package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/orderd/orderd/internal/store"
)

const insertSQL = `INSERT INTO events (event_id, aggregate_id, aggregate_type, sequence,
	event_type, event_version, data, causation_id, correlation_id, timestamp, metadata)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// writeLoop is the only goroutine that writes. It takes whatever appends are
// queued, up to maxBatch, and commits them in one transaction, together
// with any feed progress waiting to be saved and any e-mail claims. While a batch is being
// fsynced new requests queue up, so the batch size grows by itself with the
// load and no timer is needed.
func (s *Store) writeLoop() {
	defer close(s.stopped)
	batch := make([]*appendReq, 0, s.maxBatch)
	var saves []*saveReq
	var claims []*claimReq
	for {
		batch, saves, claims = batch[:0], saves[:0], claims[:0]
		select {
		case <-s.closing:
			s.failQueued()
			return
		case r := <-s.reqs:
			batch = append(batch, r)
		case r := <-s.saves:
			saves = append(saves, r)
		case r := <-s.claims:
			claims = append(claims, r)
		case h := <-s.holds:
			close(h.held) // nothing commits until the holder releases
			<-h.release
			continue
		}
	drain:
		for len(batch) < s.maxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			case r := <-s.saves:
				saves = append(saves, r)
			case r := <-s.claims:
				claims = append(claims, r)
			default:
				break drain
			}
		}
		s.commitBatch(batch, saves, claims)
		clear(batch) // drop references to finished requests
		clear(saves)
		clear(claims)
	}
}

// failQueued answers the requests still queued at Close.
func (s *Store) failQueued() {
	for {
		select {
		case r := <-s.reqs:
			r.done <- store.ErrClosed
		case r := <-s.saves:
			r.done <- store.ErrClosed
		case r := <-s.claims:
			r.done <- store.ErrClosed
		default:
			return
		}
	}
}

// commitBatch writes the batch, the progress saves and the claims in one
// transaction and replies to every request once the outcome is known. Each append runs
// in its own savepoint, so one that conflicts is rolled back alone; the
// replies to the others wait for COMMIT, since an event must never be
// reported stored before it is durable.
func (s *Store) commitBatch(batch []*appendReq, saves []*saveReq, claims []*claimReq) {
	// The transaction is not bound to any caller's ctx: one caller giving up
	// must not roll back the others.
	ctx := context.Background()
	results := make([]error, len(batch))
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		s.failAll(batch, saves, claims, fmt.Errorf("sqlite: begin: %w", err))
		return
	}
	// An insert that failed for the disk fails its request alone (SQLite
	// rolled back the statement); the whole batch is spoilt only if SQLite
	// rolled the transaction back, which the savepoint's rollback finds.
	faulted := false
	st := txStmts{
		insert:     tx.StmtContext(ctx, s.insert),
		maxSeq:     tx.StmtContext(ctx, s.maxSeq),
		savepoint:  tx.StmtContext(ctx, s.savepoint),
		release:    tx.StmtContext(ctx, s.release),
		rollbackTo: tx.StmtContext(ctx, s.rollbackTo),
		journal:    tx.StmtContext(ctx, s.journalInsert),
	}
	written := 0
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i] = fmt.Errorf("sqlite: append %s: %w", r.id, err)
			continue
		}
		results[i], err = writeOne(ctx, st, r)
		if err != nil {
			// A savepoint statement failed (SQLite may have rolled back the
			// whole transaction already): none of the batch may commit.
			_ = tx.Rollback()
			s.failAll(batch, saves, claims, err)
			return
		}
		if results[i] == nil {
			written++
		} else if isFault(results[i]) {
			results[i], faulted = asUnavailable(results[i]), true
		}
	}
	save := tx.StmtContext(ctx, s.saveProgressQ)
	for _, r := range saves {
		if _, err := save.ExecContext(ctx, r.consumer, r.position); err != nil {
			_ = tx.Rollback()
			s.failAll(batch, saves, claims, fmt.Errorf("sqlite: save progress of %s: %w", r.consumer, err))
			return
		}
	}
	for _, r := range claims {
		if err := r.run(ctx, tx); err != nil {
			_ = tx.Rollback()
			s.failAll(batch, saves, claims, fmt.Errorf("sqlite: claim %s: %w", r.key, err))
			return
		}
	}
	if written == 0 && len(saves) == 0 && len(claims) == 0 {
		err = tx.Rollback()
	} else {
		err = tx.Commit()
	}
	if err != nil {
		s.failAll(batch, saves, claims, fmt.Errorf("sqlite: commit: %w", err))
		return
	}
	if faulted {
		s.health.Fault("append", true, firstFault(results))
	} else if written > 0 || len(saves) > 0 || len(claims) > 0 {
		s.health.OK()
	}
	for _, r := range saves {
		r.done <- nil
	}
	for _, r := range claims {
		r.done <- nil
	}
	if written > 0 {
		s.commits.Add(1)
		s.tail.committed(batch, results) // before the readers wake
		s.notify()
	}
	for i, r := range batch {
		if r.claim != nil && results[i] == nil {
			s.journal.forget(r.claimKey, r.claimRec) // the journal holds it now
		}
		r.done <- results[i]
	}
}

// firstFault returns the first of results that is a storage fault.
func firstFault(results []error) error {
	for _, err := range results {
		if errors.Is(err, store.ErrUnavailable) {
			return err
		}
	}
	return nil
}

// txStmts are the writer's prepared statements, bound to one transaction.
type txStmts struct {
	insert, maxSeq, savepoint, release, rollbackTo, journal *sql.Stmt
}

// writeOne runs one request. It returns the request's own outcome (nil, a
// wrapped store.ErrConflict, or another error confined to the request) and,
// separately, an error that spoils the whole transaction.
//
// A request of several events runs inside a savepoint, so that a failure
// after its first insert undoes the others. A request of one event (most
// commands) needs none: SQLite undoes a failed statement by itself. Only a
// refusal by a constraint (a version taken, an event id reused) is then
// confined to the request; any other failure of its statements (the disk,
// an I/O error) may have rolled back the whole transaction, which without
// a savepoint cannot be told apart, so it spoils the batch, whose requests
// all fail with it.
//
// A keyed command's request (r.claim) also writes its key's record into
// the journal after its events (see insertAll), so that the record
// commits with the events or not at all.
func writeOne(ctx context.Context, st txStmts, r *appendReq) (result, fatal error) {
	if len(r.rows) == 1 {
		err := insertAll(ctx, st, r)
		if err != nil && !refused(err) {
			return nil, err
		}
		return err, nil
	}
	if _, err := st.savepoint.ExecContext(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: savepoint: %w", err)
	}
	result = insertAll(ctx, st, r)
	if result != nil {
		if _, err := st.rollbackTo.ExecContext(ctx); err != nil {
			return nil, fmt.Errorf("sqlite: append %s: rollback to savepoint after %w: %w", r.id, result, err)
		}
	}
	if _, err := st.release.ExecContext(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: release savepoint: %w", err)
	}
	return result, nil
}

// insertAll checks the aggregate's version and inserts the request's events.
// A request that starts an aggregate (expected version 0) reads nothing: if
// the aggregate has events, its first insert, of sequence 1, is refused by
// the unique (aggregate_id, sequence), which insertError reports as the
// same conflict. Any other expected version is read first, since inserting
// past the aggregate's version would leave a gap no constraint sees.
//
// Then it writes the record of a keyed command's key (r.claim) into the
// journal. Its failure is never a refusal (the error does not wrap
// SQLite's): without a savepoint the events inserted before it could not
// be undone alone, so it spoils the batch.
func insertAll(ctx context.Context, st txStmts, r *appendReq) error {
	if r.expected > 0 {
		var version int64
		if err := st.maxSeq.QueryRowContext(ctx, r.id.String()).Scan(&version); err != nil {
			return fmt.Errorf("sqlite: append %s: read version: %w", r.id, err)
		}
		if version != r.expected {
			return fmt.Errorf("sqlite: append %s: version is %d, not %d: %w", r.id, version, r.expected, store.ErrConflict)
		}
	}
	for i, row := range r.rows {
		res, err := st.insert.ExecContext(ctx, row...)
		if err != nil {
			return insertError(r, err)
		}
		// The rowid is the position (INTEGER PRIMARY KEY); the driver has
		// it without asking SQLite again.
		if i < len(r.positions) {
			if r.positions[i], err = res.LastInsertId(); err != nil {
				return fmt.Errorf("sqlite: append %s: position: %w", r.id, err)
			}
		}
	}
	if r.claim != nil {
		if _, err := st.journal.ExecContext(ctx, r.claim...); err != nil {
			return fmt.Errorf("sqlite: append %s: journal the idempotency key: %v", r.id, err)
		}
	}
	return nil
}

// insertError maps a failed insert. A unique violation on (aggregate_id,
// sequence) is a version conflict that the check above missed, which can
// only happen if something else writes the file; on event_id it is a
// reused event id, the caller's bug. SQLite reports which constraint failed
// only in the message.
func insertError(r *appendReq, err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE {
		if strings.Contains(se.Error(), "events.event_id") {
			return fmt.Errorf("sqlite: append %s: event id already stored: %w", r.id, err)
		}
		return fmt.Errorf("sqlite: append %s: %w", r.id, store.ErrConflict)
	}
	return fmt.Errorf("sqlite: append %s: insert: %w", r.id, err)
}

// refused reports whether err is a request's refusal by a constraint, which
// SQLite undoes with its statement, leaving the transaction as it was.
func refused(err error) bool {
	var se *sqlite.Error
	return errors.Is(err, store.ErrConflict) || errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}

// failAll answers every request of a batch that did not commit with err.
// A storage fault is wrapped in store.ErrUnavailable and logged by the
// store's health, once per episode; any other failure is logged here.
func (s *Store) failAll(batch []*appendReq, saves []*saveReq, claims []*claimReq, err error) {
	// A failed COMMIT may still have reached the disk: the feed reads the
	// log until the next commit anchors its tail again.
	s.tail.invalidate()
	op := "append"
	switch {
	case len(batch) > 0:
	case len(claims) > 0:
		op = "claim"
	default:
		op = "progress"
	}
	if err = s.fault(op, true, err); !errors.Is(err, store.ErrUnavailable) {
		s.log.Error("sqlite: write batch failed", zap.Int("appends", len(batch)), zap.Int("progress_saves", len(saves)), zap.Error(err))
	}
	for _, r := range batch {
		r.done <- err
	}
	for _, r := range saves {
		r.done <- err
	}
	for _, r := range claims {
		r.done <- err
	}
}
