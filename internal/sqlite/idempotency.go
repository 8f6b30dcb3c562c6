package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// DefaultPurgeEvery is how often Keys deletes expired records when
// KeysOptions.PurgeEvery is zero.
const DefaultPurgeEvery = time.Minute

// purgeBatch bounds the rows one purge transaction deletes, so that a
// large backlog never holds keys.db's write lock for long.
const purgeBatch = 1000

// KeysOptions configure OpenKeys. The zero value is usable.
type KeysOptions struct {
	// Logger receives purge failures; nil logs nothing.
	Logger *zap.Logger
	// PurgeEvery is how often expired records are deleted; 0 means
	// DefaultPurgeEvery.
	PurgeEvery time.Duration
	// Now is the clock of Get and of the purge; nil means time.Now.
	Now func() time.Time
	// Health receives the storage faults of keys.db's writes; pass the
	// event store's (Store.Health), so that one episode covers the data
	// dir's disk. Keys report faults only, never recovery: the event
	// store's writes and probe say when the disk is back. nil: a Health of
	// its own.
	Health *store.Health
	// Events is the event store of the same data directory. With it, the
	// record of a key whose command appends is written by the event
	// writer into events.db's journal, in the transaction of the events,
	// and Begin makes no fsync of its own (see Keys); OpenKeys first
	// copies the journal left by the previous process into keys.db. nil:
	// every Begin that claims its key fsyncs keys.db.
	Events *Store
}

// journalEvery is how often Keys fsyncs keys.db and then deletes the rows
// of events.db's journal that keys.db now holds durably.
const journalEvery = 5 * time.Second

// Keys is a store.Idempotency on a SQLite file of its own (keys.db beside
// events.db). It is safe for concurrent use.
//
// Why its own file: SQLite has one writer per file, so a key written into
// events.db by any connection but the event writer's would hold the lock
// that the writer's group commit needs, and a writer that finds the lock
// taken sleeps in its busy handler for milliseconds. In a file of its own
// the keys never touch the event writer.
//
// Durability: the file runs with synchronous=NORMAL, which in WAL mode
// syncs nothing at commit. A lost Complete or Abandon only leaves the key
// pending, which a retry settles from the events. What must never be lost
// is the record of a command whose events are durable (a retry that found
// no record would run the command again), which is why the record names
// the aggregate to look in. With KeysOptions.Events (as orderd opens it)
// the event writer writes that record into events.db's journal in the
// same transaction as the events (see keyJournal): both are durable under
// the events' one fsync, or neither is, and a crash of the machine that
// loses keys.db's latest writes loses no record whose command appended,
// since the next OpenKeys copies the journal into keys.db. A write to the
// WAL reaches the kernel at commit, so a crash of the process alone loses
// nothing. Every journalEvery keys.db is fsynced and the journal's rows
// written before are deleted, so the journal stays small. Without Events,
// a Begin that claims its key returns only after an fsync of the WAL file
// that began after its commit (concurrent Begins share one fsync).
//
// Writes are group-committed too: one goroutine runs every write waiting
// at once in one transaction (see writeLoop), so a busy store pays one
// BEGIN, COMMIT and WAL append for many keys instead of one for each.
type Keys struct {
	w, r   *sql.DB
	log    *zap.Logger
	health *store.Health
	now    func() time.Time
	stmts  map[string]*sql.Stmt // keyStatements, prepared once: on w, "get" on r
	wal    walSyncer
	events *Store        // with its journal, or nil: see KeysOptions.Events
	writes chan keyWrite // to writeLoop
	stop   chan struct{}
	done   chan struct{} // the purge loop's
	wrote  chan struct{} // writeLoop's
	close  sync.Once
	boots  sync.Map // the boots (uuid.UUID) whose attempts own records through this Keys: see settled
}

// OpenKeys opens (creating if needed) the key store at path, brings its
// schema up to date and starts the purge of expired records. The records
// left pending by the previous process read as abandoned (see
// Keys.settled).
// The caller must Close it. Like the event store, it belongs to one
// process; the event store's lock on the data dir keeps a second one out,
// and only a process holding it may open the keys.
func OpenKeys(path string, opts KeysOptions) (*Keys, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.PurgeEvery <= 0 {
		opts.PurgeEvery = DefaultPurgeEvery
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	w, r, err := openDB(context.Background(), path, "sqlite/keys", dbOptions{Synchronous: "NORMAL"})
	if err != nil {
		return nil, fmt.Errorf("sqlite: keys: %w", err)
	}
	// The WAL exists once openDB has migrated: it stays, with its inode,
	// while a connection is open.
	wal, err := os.OpenFile(path+"-wal", os.O_RDWR, 0)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("sqlite: keys: open the WAL: %w", err), r.Close(), w.Close())
	}
	if opts.Health == nil {
		opts.Health = store.NewHealth("sqlite: keys", opts.Logger)
	}
	k := &Keys{w: w, r: r, log: opts.Logger, health: opts.Health, now: opts.Now, stmts: map[string]*sql.Stmt{}, events: opts.Events,
		writes: make(chan keyWrite), stop: make(chan struct{}), done: make(chan struct{}), wrote: make(chan struct{})}
	for name, query := range keyStatements {
		db := w
		if name == "get" {
			db = r
		}
		stmt, err := db.Prepare(query)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("sqlite: keys: prepare %s: %w", name, err), wal.Close(), r.Close(), w.Close())
		}
		k.stmts[name] = stmt
	}
	k.wal.init(wal)
	if k.events != nil {
		if err := k.recoverJournal(context.Background()); err != nil {
			var errs []error
			for _, stmt := range k.stmts {
				errs = append(errs, stmt.Close())
			}
			return nil, errors.Join(append(errs, err, wal.Close(), r.Close(), w.Close())...)
		}
	}
	go k.writeLoop()
	go k.purgeLoop(opts.PurgeEvery)
	return k, nil
}

// settled returns rec as this process sees it: a record pending for an
// attempt of a boot that wrote nothing through this Keys was left by a
// process that has died, since the keys belong to one process at a time
// (the event store's lock on the data dir keeps a second one out), so it
// reads as abandoned. The next request with the key then settles it at
// once, from the events, rather than answering 409
// idempotency_key_in_flight until the record looks dead. Nothing is
// written: a command whose events are its answer leaves its record
// pending for good (see api.Idempotency), and rewriting them all at each
// open would cost a write per keyed command of the last day.
func (k *Keys) settled(rec store.IdempotencyRecord) store.IdempotencyRecord {
	if rec.State == store.Pending {
		if _, live := k.boots.Load(rec.Process.Boot); !live {
			rec.State = store.Abandoned
		}
	}
	return rec
}

// Close stops the purge and closes the database. Calls after Close return
// store.ErrClosed.
func (k *Keys) Close() error {
	err := store.ErrClosed
	k.close.Do(func() {
		close(k.stop)
		<-k.done
		<-k.wrote
		var errs []error
		for _, stmt := range k.stmts {
			errs = append(errs, stmt.Close())
		}
		err = errors.Join(append(errs, k.r.Close(), k.w.Close(), k.wal.f.Close())...)
		if err != nil {
			err = fmt.Errorf("sqlite: keys: close: %w", err)
		}
	})
	return err
}

func (k *Keys) closed() bool {
	select {
	case <-k.stop:
		return true
	default:
		return false
	}
}

const keyColumns = `key, record_id, fingerprint, owner, state, aggregate_id, status, header, body,
	created_at, updated_at, expires_at, instance, boot`

// keyCondition is where an update applies: c.Key's record, if c.Owner
// owns it and it has not expired.
const keyCondition = ` WHERE key = ? AND owner = ? AND expires_at > ?`

// keyStatements are the key store's statements by name, prepared once at
// open (parsing one took about 7% of a keyed command's CPU, inside the
// write lock). The updates take their SET arguments, then key, owner and
// now.
var keyStatements = map[string]string{
	"begin": `INSERT INTO idempotency_keys
		(key, record_id, fingerprint, owner, state, aggregate_id, created_at, updated_at, expires_at, instance, boot)
		VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET record_id = excluded.record_id, fingerprint = excluded.fingerprint,
			owner = excluded.owner, state = 'pending', aggregate_id = excluded.aggregate_id, status = NULL, header = NULL,
			body = NULL, created_at = excluded.created_at, updated_at = excluded.updated_at,
			expires_at = excluded.expires_at, instance = excluded.instance, boot = excluded.boot
		WHERE idempotency_keys.expires_at <= excluded.created_at`,
	"recover": `INSERT INTO idempotency_keys
		(key, record_id, fingerprint, owner, state, aggregate_id, created_at, updated_at, expires_at, instance, boot)
		VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET record_id = excluded.record_id, fingerprint = excluded.fingerprint,
			owner = excluded.owner, state = 'pending', aggregate_id = excluded.aggregate_id, status = NULL, header = NULL,
			body = NULL, created_at = excluded.created_at, updated_at = excluded.updated_at,
			expires_at = excluded.expires_at, instance = excluded.instance, boot = excluded.boot
		WHERE idempotency_keys.record_id != excluded.record_id AND idempotency_keys.created_at < excluded.created_at`,
	"current":   `SELECT ` + keyColumns + ` FROM idempotency_keys WHERE key = ?`,
	"get":       `SELECT ` + keyColumns + ` FROM idempotency_keys WHERE key = ? AND expires_at > ?`,
	"complete":  `UPDATE idempotency_keys SET state = 'done', status = ?, header = ?, body = ?, updated_at = ?` + keyCondition,
	"abandon":   `UPDATE idempotency_keys SET state = 'abandoned', updated_at = ?` + keyCondition,
	"take over": `UPDATE idempotency_keys SET owner = ?, instance = ?, boot = ?, state = 'pending', updated_at = ?` + keyCondition + ` AND state IN ('pending', 'abandoned')`,
}

// Begin claims rec.Key unless an unexpired record holds it; an expired one
// is replaced in the same statement. A claim returns after an fsync of the
// WAL that began after its commit. It returns store.ErrClosed after Close.
func (k *Keys) Begin(ctx context.Context, rec store.IdempotencyRecord) (_ store.IdempotencyRecord, began bool, err error) {
	if k.closed() {
		return rec, false, store.ErrClosed
	}
	rec.State, rec.Response = store.Pending, store.IdempotentResponse{}
	var agg any // NULL for uuid.Nil
	if rec.AggregateID != uuid.Nil {
		agg = rec.AggregateID.String()
	}
	cur := rec
	err = k.write(func(tx *sql.Tx) error {
		res, err := tx.Stmt(k.stmts["begin"]).Exec(
			rec.Key, rec.ID.String(), rec.Fingerprint, rec.Owner.String(), agg,
			formatTime(rec.Created), formatTime(rec.Updated), formatTime(rec.Expires), rec.Process.Instance, rec.Process.Boot.String())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			began = true
			k.boots.Store(rec.Process.Boot, true)
			return nil
		}
		// The record that kept it out, as this transaction sees it.
		held, found, err := scanKey(tx.Stmt(k.stmts["current"]).QueryRow(rec.Key))
		if err != nil {
			return err
		}
		if !found {
			return errors.New("neither inserted nor found")
		}
		cur = k.settled(held)
		return nil
	})
	if err != nil {
		return rec, false, fmt.Errorf("sqlite: begin key %q: %w", rec.Key, k.fault(true, err))
	}
	if began && k.events != nil {
		k.events.journal.claim(rec) // durable with the command's events
	} else if began {
		if err := k.wal.sync(); err != nil {
			return rec, false, fmt.Errorf("sqlite: begin key %q: sync: %w", rec.Key, k.fault(true, err))
		}
	}
	return cur, began, nil
}

// Get returns the unexpired record of key.
func (k *Keys) Get(ctx context.Context, key string) (store.IdempotencyRecord, bool, error) {
	if k.closed() {
		return store.IdempotencyRecord{}, false, store.ErrClosed
	}
	rec, found, err := scanKey(k.stmts["get"].QueryRowContext(context.WithoutCancel(ctx), key, formatTime(k.now())))
	if err != nil {
		return rec, false, fmt.Errorf("sqlite: get key %q: %w", key, k.fault(false, err))
	}
	return k.settled(rec), found, nil
}

// Complete stores the answer and marks the record done.
func (k *Keys) Complete(ctx context.Context, c store.IdempotencyClaim, resp store.IdempotentResponse, now time.Time) error {
	header, err := json.Marshal(resp.Header)
	if err != nil {
		return fmt.Errorf("sqlite: complete key %q: %w", c.Key, err)
	}
	err = k.update(ctx, "complete", c, resp.Status, string(header), resp.Body, formatTime(now))
	if err == nil && k.events != nil {
		k.events.journal.forget(c.Key, "")
	}
	return err
}

// Abandon marks the record abandoned.
func (k *Keys) Abandon(ctx context.Context, c store.IdempotencyClaim, now time.Time) error {
	err := k.update(ctx, "abandon", c, formatTime(now))
	if err == nil && k.events != nil {
		k.events.journal.forget(c.Key, "")
	}
	return err
}

// Takeover hands a pending or abandoned record to the attempt to.
func (k *Keys) Takeover(ctx context.Context, c store.IdempotencyClaim, to uuid.UUID, by store.Process, now time.Time) (bool, error) {
	k.boots.Store(by.Boot, true) // before the write: a reader must never see it pending for a boot not yet known
	err := k.update(ctx, "take over", c, to.String(), by.Instance, by.Boot.String(), formatTime(now))
	if errors.Is(err, store.ErrNotOwner) {
		return false, nil
	}
	if err == nil && k.events != nil {
		// The record may not be durable in keys.db (it may be the
		// journal's copy): the events of the attempt that now runs it
		// write it again.
		rec, found, gerr := k.Get(ctx, c.Key)
		if gerr != nil {
			return false, gerr
		}
		if found && rec.Owner == to {
			k.events.journal.claim(rec)
		}
	}
	return err == nil, err
}

// update runs the update op (a keyStatements name) with args, its SET
// arguments, on the record of c.Key if c.Owner owns it, it has not
// expired, and (for a take over) it is not done.
func (k *Keys) update(ctx context.Context, op string, c store.IdempotencyClaim, args ...any) (err error) {
	if k.closed() {
		return store.ErrClosed
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("sqlite: %s key %q: %w", op, c.Key, k.fault(true, err))
		}
	}()
	args = append(args, c.Key, c.Owner.String(), formatTime(k.now()))
	owned := true
	if err := k.write(func(tx *sql.Tx) error {
		res, err := tx.Stmt(k.stmts[op]).Exec(args...)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		owned = n > 0
		return err
	}); err != nil {
		return err
	}
	if !owned {
		return store.ErrNotOwner
	}
	return nil
}

// fault wraps a storage fault in store.ErrUnavailable and counts it under
// the op "keys"; a write's opens an episode of the health.
func (k *Keys) fault(write bool, err error) error {
	if err = asUnavailable(err); errors.Is(err, store.ErrUnavailable) {
		k.health.Fault("keys", write, err)
	}
	return err
}

// Purge deletes the records that expired by now and returns how many.
func (k *Keys) Purge(ctx context.Context, now time.Time) (int64, error) {
	var total int64
	for {
		if k.closed() {
			return total, store.ErrClosed
		}
		var n int64
		if err := k.write(func(tx *sql.Tx) error {
			res, err := tx.Exec(`DELETE FROM idempotency_keys WHERE key IN
				(SELECT key FROM idempotency_keys WHERE expires_at <= ? LIMIT ?)`, formatTime(now), purgeBatch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		}); err != nil {
			return total, fmt.Errorf("sqlite: purge keys: %w", err)
		}
		total += n
		if n < purgeBatch {
			return total, nil
		}
	}
}

func (k *Keys) purgeLoop(every time.Duration) {
	defer close(k.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var journal <-chan time.Time // nil without Events
	if k.events != nil {
		t := time.NewTicker(journalEvery)
		defer t.Stop()
		journal = t.C
	}
	for {
		select {
		case <-k.stop:
			return
		case <-journal:
			k.events.journal.sweep(time.Now().Add(-claimTTL))
			if err := k.trimJournal(context.Background()); err != nil && !errors.Is(err, store.ErrClosed) {
				k.log.Warn("trimming the journal of idempotency keys failed", zap.Error(err))
			}
		case <-tick.C:
			n, err := k.Purge(context.Background(), k.now())
			switch {
			case errors.Is(err, store.ErrClosed):
				return
			case err != nil:
				k.log.Error("purge of expired idempotency keys failed", zap.Error(err))
			case n > 0:
				k.log.Debug("purged expired idempotency keys", zap.Int64("keys", n))
			}
		}
	}
}

// walSyncer fsyncs the WAL file for writers that need their commit
// durable, one fsync for all who asked while the previous one ran.
type walSyncer struct {
	f       *os.File
	mu      sync.Mutex
	cond    *sync.Cond
	started uint64 // the number of fsyncs begun
	done    uint64 // the last fsync finished
	running bool
	err     error // of the last fsync finished
}

func (s *walSyncer) init(f *os.File) {
	s.f = f
	s.cond = sync.NewCond(&s.mu)
}

// sync returns once an fsync that began after the call has finished, with
// its error.
func (s *walSyncer) sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	need := s.started + 1 // one running now may have begun before our commit
	for s.done < need {
		if s.running {
			s.cond.Wait()
			continue
		}
		s.running = true
		s.started++
		n := s.started
		s.mu.Unlock()
		err := s.f.Sync()
		s.mu.Lock()
		s.running, s.done, s.err = false, n, err
		s.cond.Broadcast()
	}
	return s.err
}

func scanKey(row *sql.Row) (store.IdempotencyRecord, bool, error) {
	var (
		rec                       store.IdempotencyRecord
		id, owner, state          string
		agg, header               sql.NullString
		status                    sql.NullInt64
		created, updated, expires string
		boot                      string
		errs                      [7]error
	)
	err := row.Scan(&rec.Key, &id, &rec.Fingerprint, &owner, &state, &agg, &status, &header, &rec.Response.Body,
		&created, &updated, &expires, &rec.Process.Instance, &boot)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, err
	}
	rec.State = store.IdempotencyState(state)
	rec.ID, errs[0] = uuid.Parse(id)
	rec.Owner, errs[1] = uuid.Parse(owner)
	if agg.Valid {
		rec.AggregateID, errs[2] = uuid.Parse(agg.String)
	}
	rec.Created, errs[3] = parseTime(created)
	rec.Updated, errs[4] = parseTime(updated)
	rec.Expires, errs[5] = parseTime(expires)
	if boot != "" { // empty in rows from before the column
		rec.Process.Boot, errs[6] = uuid.Parse(boot)
	}
	if err := errors.Join(errs[:]...); err != nil {
		return rec, false, fmt.Errorf("key %q: %w", rec.Key, err)
	}
	rec.Response.Status = int(status.Int64)
	if header.Valid {
		if err := json.Unmarshal([]byte(header.String), &rec.Response.Header); err != nil {
			return rec, false, fmt.Errorf("key %q: header: %w", rec.Key, err)
		}
	}
	return rec, true, nil
}

var _ store.Idempotency = (*Keys)(nil)

// recoverJournal copies into keys.db the records of events.db's journal
// that it may have lost (see KeysOptions.Events), fsyncs keys.db and
// deletes them from the journal. A row replaces the record of its key
// unless that is the same record (which may have moved on: done, taken
// over) or one created after it.
func (k *Keys) recoverJournal(ctx context.Context) error {
	rows, err := k.events.readJournal(ctx)
	if err != nil || len(rows) == 0 {
		return err
	}
	tx, err := k.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: keys: recover the journal: %w", err)
	}
	stmt := tx.StmtContext(ctx, k.stmts["recover"])
	for _, row := range rows {
		// key, record_id, fingerprint, owner, aggregate_id, created_at, expires_at, instance, boot
		a := row.args
		if _, err := stmt.ExecContext(ctx, a[0], a[1], a[2], a[3], a[4], a[5], a[5], a[6], a[7], a[8]); err != nil {
			return errors.Join(fmt.Errorf("sqlite: keys: recover the journal: %w", err), tx.Rollback())
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: keys: recover the journal: %w", err)
	}
	if err := k.wal.sync(); err != nil {
		return fmt.Errorf("sqlite: keys: recover the journal: sync: %w", err)
	}
	k.log.Info("recovered idempotency keys from the journal", zap.Int("records", len(rows)))
	return k.events.dropJournal(ctx, rows[len(rows)-1].seq)
}

// trimJournal deletes the rows of events.db's journal whose records
// keys.db holds durably: every row written before an fsync of keys.db
// began, since a row's record was committed into keys.db (by Begin, or
// found there by Takeover) before its command appended.
func (k *Keys) trimJournal(ctx context.Context) error {
	if k.closed() {
		return store.ErrClosed
	}
	head, err := k.events.journalHead(ctx)
	if err != nil || head == 0 {
		return err
	}
	if err := k.wal.sync(); err != nil {
		return fmt.Errorf("sqlite: keys: sync: %w", k.fault(true, err))
	}
	return k.events.dropJournal(ctx, head)
}
