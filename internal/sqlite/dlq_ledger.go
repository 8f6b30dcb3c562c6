// The relay's ledger (relay.Ledger: its dead letters and the operators'
// requests on them) is kept in a SQLite file of its own, separate from
// the event store and the read models, so that the relay's writes never
// wait for theirs. It is the ledger of a single orderd on SQLite; on the
// CQL backend the ledger lives in the cluster (internal/cql).
//
// Durability: the file runs with journal_mode=WAL and synchronous=FULL, and
// unlike the read models it is not a cache: the dead letters are the only
// record of events that were not published. Under synchronous=NORMAL a
// power cut may roll back commits the relay has already acted on: an
// operator's discard would be undone (the discarded letter comes back, and
// the events published behind it are published again), and a dead letter
// recorded just before the feed saved its progress past it would be lost.
// FULL syncs the WAL at every commit; the relay commits only when a batch
// has dead letters, or for an operator's request, so the fsync is rare.

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/orderd/orderd/internal/relay"
)

// busyTimeout is how long a connection waits for a lock held by another
// connection (a WAL checkpoint, the sqlite3 CLI during an incident).
const busyTimeout = 5 * time.Second

// Ledger is a relay.Ledger on a SQLite file. It is safe for concurrent use.
//
// Times read back exactly, in UTC. Writes go through one connection
// (SQLite admits one writer at a time anyway); reads use a pool that, in
// WAL mode, never waits for the writer.
type Ledger struct {
	w      *sql.DB
	r      *sql.DB
	log    *zap.Logger
	fences *leases // nil: fences in a context are ignored
}

// FencedBy makes the ledger's writes (Record, Update, Remove, Finish)
// refuse, with store.ErrFenced, a context whose fence (store.WithFence) is
// not the current epoch of s's lease. The check and the commit happen
// under s's leases' lock, so that no take comes in between. Call it before
// the ledger is used.
func (l *Ledger) FencedBy(s *Store) { l.fences = &s.leases }

// OpenLedger opens (creating if needed) the ledger at path and brings its schema
// up to date. log may be nil. The caller must Close the ledger. It returns
// an error if the file cannot be opened or migrated.
func OpenLedger(path string, log *zap.Logger) (*Ledger, error) {
	if log == nil {
		log = zap.NewNop()
	}
	l := &Ledger{log: log}
	if err := l.open(path); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	log.Info("relay ledger open", zap.String("path", path))
	return l, nil
}

func (l *Ledger) open(path string) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// synchronous=FULL: see the package comment.
	if l.w, l.r, err = openDB(ctx, path, "sqlite/relay",
		dbOptions{Synchronous: "FULL", BusyTimeout: busyTimeout}); err != nil {
		return fmt.Errorf("sqlite: ledger: %w", asUnavailable(err))
	}
	return nil
}

// Close closes the database; every method fails after it.
func (l *Ledger) Close() error {
	var errs []error
	for _, db := range []*sql.DB{l.r, l.w} {
		if db != nil {
			if err := db.Close(); err != nil {
				errs = append(errs, fmt.Errorf("sqlite: ledger: close: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// Record stores letters in one transaction: either all of them or none.
//
// A letter whose position is already recorded is ignored, not overwritten.
// A position always names the same event, and the stored letter may have
// moved on since it was first recorded (more attempts, a newer error, a
// parked letter that became failed), which an overwrite would undo. Ignoring
// it also makes a retried Record (one whose commit succeeded although the
// caller saw an error) change nothing. A letter for an event that is
// recorded under another position, a state other than relay.Failed or
// relay.Parked, or a position below 1 fails the whole call.
func (l *Ledger) Record(ctx context.Context, letters []relay.DeadLetter) (err error) {
	if len(letters) == 0 {
		return nil
	}
	for _, d := range letters {
		if err := d.Check(); err != nil {
			return fmt.Errorf("sqlite: ledger: record: %w", asUnavailable(err))
		}
	}
	release, err := l.fences.hold(ctx, "record dead letters")
	if err != nil {
		return fmt.Errorf("sqlite: ledger: %w", err)
	}
	defer release()
	tx, err := l.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: ledger: record: %w", asUnavailable(err))
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that got us here is the one to report
			err = fmt.Errorf("sqlite: ledger: record: %w", asUnavailable(err))
		}
	}()
	for _, d := range letters {
		if _, err := tx.ExecContext(ctx, `INSERT INTO dead_letters (position, event_id, aggregate_id,
			aggregate_type, sequence, event_type, topic, state, error, attempts, first_failed_at, last_failed_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (position) DO NOTHING`,
			d.Position, d.EventID.String(), d.AggregateID.String(), d.AggregateType, d.Sequence, d.EventType,
			d.Topic, d.State, d.Error, d.Attempts, formatTime(d.FirstFailedAt), formatTime(d.LastFailedAt)); err != nil {
			return fmt.Errorf("letter %d: %w", d.Position, err)
		}
	}
	return tx.Commit()
}

var _ relay.Ledger = (*Ledger)(nil)
