package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// DataKeys is a store.DataKeys on a SQLite file of its own (datakeys.db
// beside events.db). It is safe for concurrent use.
//
// Why its own file: its writer runs with secure_delete, which costs every
// delete a write of zeros, and an erasure truncates the file's WAL, which
// events.db's group commit must never wait for. synchronous=FULL: a key
// lost to a power cut would make the events appended with it unreadable.
//
// What of an erased key may remain: nothing in the database file (the row
// keeps its place as a tombstone, its bytes overwritten by secure_delete)
// and nothing in the WAL once the erasure's checkpoint truncated it (a
// reader holding an old snapshot can delay that to the next erasure or
// checkpoint). Copies made before the erasure (backups) keep it, wrapped:
// see docs/operations.md.
type DataKeys struct {
	w, r   *sql.DB
	closed atomic.Bool
	// health, if set (Open sets the event store's: one disk, one
	// episode), is told of storage faults, so that a full disk that fails
	// a registration's key makes the store unready as an append would.
	health *store.Health

	creates chan keyCreate // to createLoop
	stop    chan struct{}  // closed by Close
	stopped chan struct{}  // closed when createLoop returns
}

// keyCreate is one Create waiting for its batch.
type keyCreate struct {
	key  store.WrappedKey
	done chan keyCreated
}

type keyCreated struct {
	key store.WrappedKey
	err error
}

// maxCreateBatch bounds the creations of one transaction.
const maxCreateBatch = 256

// OpenDataKeys opens (creating if needed) the data key store at path and
// brings its schema up to date. The caller must Close it.
func OpenDataKeys(ctx context.Context, path string) (*DataKeys, error) {
	w, r, err := openDB(ctx, path, "sqlite/datakeys", dbOptions{Synchronous: "FULL", SecureDelete: true})
	if err != nil {
		return nil, fmt.Errorf("sqlite: data keys: %w", err)
	}
	d := &DataKeys{w: w, r: r, creates: make(chan keyCreate), stop: make(chan struct{}), stopped: make(chan struct{})}
	go d.createLoop()
	return d, nil
}

// Close closes the database. Calls after Close return store.ErrClosed.
func (d *DataKeys) Close() error {
	if d.closed.Swap(true) {
		return store.ErrClosed
	}
	close(d.stop)
	<-d.stopped
	if err := errors.Join(d.r.Close(), d.w.Close()); err != nil {
		return fmt.Errorf("sqlite: data keys: close: %w", err)
	}
	return nil
}

// Create stores k unless its subject has a key or a tombstone, and returns
// the stored key. Creations are committed in groups (createLoop): a
// registration's key costs a share of one fsync, not one of its own.
func (d *DataKeys) Create(ctx context.Context, k store.WrappedKey) (_ store.WrappedKey, err error) {
	defer d.wrapErr(&err, true, "create data key of %s", k.Subject)
	c := keyCreate{key: k, done: make(chan keyCreated, 1)}
	select {
	case d.creates <- c:
	case <-d.stop:
		return store.WrappedKey{}, store.ErrClosed
	case <-ctx.Done():
		return store.WrappedKey{}, ctx.Err()
	}
	r := <-c.done // the batch is bound to no caller's context: wait for it
	return r.key, r.err
}

// Mint is Create, which on SQLite costs the same, refusing a subject whose
// stored key is not k.
func (d *DataKeys) Mint(ctx context.Context, k store.WrappedKey) error {
	got, err := d.Create(ctx, k)
	if err != nil {
		return err
	}
	if got.KEK != k.KEK || !bytes.Equal(got.Wrapped, k.Wrapped) {
		return fmt.Errorf("sqlite: mint data key of %s: the subject has a key already", k.Subject)
	}
	return nil
}

// createLoop is the only goroutine that creates keys: it takes the
// creations waiting, up to maxCreateBatch, and commits them in one
// transaction, so that the batch grows with the load. Each creation reads
// on the writer, inside the transaction, so that it sees its own insert or
// the one that beat it (an earlier one of the same batch included).
func (d *DataKeys) createLoop() {
	defer close(d.stopped)
	batch := make([]keyCreate, 0, maxCreateBatch)
	for {
		batch = batch[:0]
		select {
		case c := <-d.creates:
			batch = append(batch, c)
		case <-d.stop:
			return
		}
	drain:
		for len(batch) < maxCreateBatch {
			select {
			case c := <-d.creates:
				batch = append(batch, c)
			default:
				break drain
			}
		}
		got, err := d.createBatch(batch)
		for i, c := range batch {
			if err != nil {
				c.done <- keyCreated{err: err}
				continue
			}
			c.done <- got[i]
		}
	}
}

// createBatch inserts the batch's keys in one transaction and reads back
// each subject's stored key (ErrKeyErased for a tombstone is that
// creation's answer, not the batch's failure).
func (d *DataKeys) createBatch(batch []keyCreate) ([]keyCreated, error) {
	ctx := context.Background()
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	out := make([]keyCreated, len(batch))
	for i, c := range batch {
		k := c.key
		if _, err := tx.ExecContext(ctx, `INSERT INTO data_keys (subject, kek, wrapped, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (subject) DO NOTHING`, k.Subject.String(), k.KEK, k.Wrapped, formatTime(k.Created)); err != nil {
			return nil, err
		}
		got, err := getKey(ctx, tx, k.Subject)
		if err != nil && !errors.Is(err, store.ErrKeyErased) {
			return nil, err
		}
		out[i] = keyCreated{key: got, err: err}
	}
	return out, tx.Commit()
}

// Get returns the subject's key.
func (d *DataKeys) Get(ctx context.Context, subject uuid.UUID) (_ store.WrappedKey, err error) {
	if d.closed.Load() {
		return store.WrappedKey{}, store.ErrClosed
	}
	defer d.wrapErr(&err, false, "get data key of %s", subject)
	return getKey(ctx, d.r, subject)
}

// queryer is what getKey reads through: the readers' pool or the writer's
// transaction.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func getKey(ctx context.Context, q queryer, subject uuid.UUID) (store.WrappedKey, error) {
	var (
		kek, erasedAt sql.NullString
		wrapped       []byte
		created       string
	)
	err := q.QueryRowContext(ctx, `SELECT kek, wrapped, created_at, erased_at FROM data_keys WHERE subject = ?`,
		subject.String()).Scan(&kek, &wrapped, &created, &erasedAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.WrappedKey{}, store.ErrKeyNotFound
	case err != nil:
		return store.WrappedKey{}, err
	case erasedAt.Valid:
		return store.WrappedKey{}, store.ErrKeyErased
	}
	at, err := parseTime(created)
	if err != nil {
		return store.WrappedKey{}, err
	}
	return store.WrappedKey{Subject: subject, KEK: kek.String, Wrapped: wrapped, Created: at}, nil
}

// Erase replaces the subject's row by a tombstone (secure_delete zeroes the
// old bytes), then truncates the WAL, whose frames held the page with the
// key.
func (d *DataKeys) Erase(ctx context.Context, subject uuid.UUID, at time.Time) (err error) {
	if d.closed.Load() {
		return store.ErrClosed
	}
	defer d.wrapErr(&err, true, "erase data key of %s", subject)
	if _, err := d.w.ExecContext(ctx, `INSERT INTO data_keys (subject, created_at, erased_at) VALUES (?, ?, ?)
		ON CONFLICT (subject) DO UPDATE SET kek = NULL, wrapped = NULL, erased_at = coalesce(erased_at, excluded.erased_at)`,
		subject.String(), formatTime(at), formatTime(at)); err != nil {
		return err
	}
	return d.truncateWAL(ctx)
}

// truncateWAL checkpoints the WAL into the file and truncates it to zero
// bytes. A reader still on an older snapshot keeps the checkpoint from
// completing; its frames are then truncated by a later one.
func (d *DataKeys) truncateWAL(ctx context.Context) error {
	var busy, logFrames, done int
	return d.w.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &done)
}

// Rewrap replaces the wrapped key if it is still under fromKEK.
func (d *DataKeys) Rewrap(ctx context.Context, fromKEK string, k store.WrappedKey) (_ bool, err error) {
	if d.closed.Load() {
		return false, store.ErrClosed
	}
	defer d.wrapErr(&err, true, "rewrap data key of %s", k.Subject)
	res, err := d.w.ExecContext(ctx, `UPDATE data_keys SET kek = ?, wrapped = ?
		WHERE subject = ? AND kek = ? AND erased_at IS NULL`, k.KEK, k.Wrapped, k.Subject.String(), fromKEK)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// scanPage is how many keys one query of Scan reads.
const scanPage = 200

// Scan reads the live keys in subject order, a page per query, so that no
// read transaction stays open while fn runs (a rotation's rewraps would
// otherwise keep the WAL from being checkpointed).
func (d *DataKeys) Scan(ctx context.Context, fn func(store.WrappedKey) error) error {
	after := ""
	for {
		if d.closed.Load() {
			return store.ErrClosed
		}
		page, err := d.scanPage(ctx, after)
		if err != nil {
			return fmt.Errorf("sqlite: scan data keys: %w", err)
		}
		for _, k := range page {
			if err := fn(k); err != nil {
				return err
			}
		}
		if len(page) < scanPage {
			return nil
		}
		after = page[len(page)-1].Subject.String()
	}
}

func (d *DataKeys) scanPage(ctx context.Context, after string) ([]store.WrappedKey, error) {
	rows, err := d.r.QueryContext(ctx, `SELECT subject, kek, wrapped, created_at FROM data_keys
		WHERE subject > ? AND erased_at IS NULL ORDER BY subject LIMIT ?`, after, scanPage)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var page []store.WrappedKey
	for rows.Next() {
		var subject, kek, created string
		var k store.WrappedKey
		if err := rows.Scan(&subject, &kek, &k.Wrapped, &created); err != nil {
			return nil, err
		}
		if k.Subject, err = uuid.Parse(subject); err != nil {
			return nil, err
		}
		if k.Created, err = parseTime(created); err != nil {
			return nil, err
		}
		k.KEK = kek
		page = append(page, k)
	}
	return page, rows.Err()
}

// wrapErr prefixes a non-nil *err with "sqlite: " and what failed; the
// store's own errors (ErrKeyNotFound, ErrKeyErased, ErrClosed) stay
// recognisable by errors.Is, and a storage fault (a full disk) wraps
// store.ErrUnavailable (503) and is counted in health; write says whether
// the request was a write.
func (d *DataKeys) wrapErr(err *error, write bool, format string, args ...any) {
	if *err == nil {
		return
	}
	what := fmt.Sprintf(format, args...)
	e := asUnavailable(*err)
	if d.health != nil && errors.Is(e, store.ErrUnavailable) {
		d.health.Fault("data_keys", write, e)
	}
	*err = fmt.Errorf("sqlite: %s: %w", what, e)
}

var _ store.DataKeys = (*DataKeys)(nil)
