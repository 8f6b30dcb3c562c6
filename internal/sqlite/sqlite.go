// Package sqlite is the embedded engine: every port of orderd (event store,
// feed, leases, replay log, idempotency keys, snapshots, read models and
// their catalog, the relay's dead-letter ledger) on SQLite files in one data
// directory, for a single orderd process. Open returns them all on one
// Backend. Files are named after the port they implement: views_* the read
// models (readmodel), dlq_* the ledger (relay); the others the event store
// and its sibling ports (store).
//
// The event store is one SQLite file, events.db. All writes go through one
// connection owned by one goroutine, which groups concurrent appends into
// one transaction (group commit): a batch pays one fsync however many
// appends it holds. Reads use a separate pool of
// connections; in WAL mode they never wait for the writer.
//
// Durability: the database runs with journal_mode=WAL and synchronous=FULL.
// In WAL mode FULL syncs the WAL file at every commit, and Append returns
// only after its batch committed, so an acknowledged append survives a
// process crash and a power cut (provided the disk honours fsync). A power
// cut can lose only batches whose COMMIT had not returned, and no caller was
// told those succeeded. NORMAL would sync only at checkpoints and could
// silently drop the last acknowledged appends, which an event log, being
// the outbox as well, cannot afford; group commit is what makes FULL cheap.
//
// One process at a time: OpenStore takes an advisory lock on path+".lock"
// and refuses a file that another Store (of this process or another) holds, so
// a second orderd on the same data dir fails at start instead of racing
// the first. The change feed wakes only on commits made through this
// *Store.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/orderd/orderd/internal/store"
)

// DefaultMaxBatch is the number of appends one transaction takes at most when
// Options.MaxBatch is zero.
const DefaultMaxBatch = 256

// DefaultFeedBatch is the number of events Subscribe hands a consumer at
// once at most when Options.FeedBatch is zero.
const DefaultFeedBatch = 500

// DefaultProgressEvery is how often at most Subscribe saves a consumer's
// progress under load when Options.ProgressEvery is zero: after a crash a
// consumer is handed again at most that much of the feed.
const DefaultProgressEvery = 100 * time.Millisecond

// defaultBusyTimeout is how long a connection waits for a lock held by
// another connection (for example a checkpoint, or the sqlite3 CLI) before
// failing.
const defaultBusyTimeout = 5 * time.Second

// Options configure OpenStore. The zero value is usable.
type Options struct {
	// Upcaster is applied to every event read; nil upcasts nothing.
	Upcaster store.Upcaster
	// Logger receives commit failures, and the start and end of each
	// episode of storage faults; nil logs nothing.
	Logger *zap.Logger
	// MaxBatch bounds how many appends share one transaction; 0 means
	// DefaultMaxBatch.
	MaxBatch int
	// FeedBatch bounds how many events Subscribe hands a consumer at once;
	// 0 means DefaultFeedBatch.
	FeedBatch int
	// ProgressEvery is how often at most Subscribe saves a consumer's
	// progress while it works through a backlog; 0 means
	// DefaultProgressEvery.
	ProgressEvery time.Duration

	// busyTimeout replaces defaultBusyTimeout, for tests that hold the
	// write lock from another connection for a while.
	busyTimeout time.Duration
}

// Store is a store.Store on a SQLite file. It is safe for concurrent use.
//
// Timestamps round-trip exactly (nanoseconds, UTC). Metadata round-trips
// exactly except that an empty map reads back as nil.
type Store struct {
	w        *sql.DB // exactly one connection, used only by the writer goroutine
	r        *sql.DB // readers
	up       store.Upcaster
	log      *zap.Logger
	maxBatch int

	feedBatch     int
	progressEvery time.Duration
	subsMu        sync.Mutex
	subs          map[string]*atomic.Int64 // running subscriptions' positions
	leases        leases
	health        *store.Health // the outcome of the recent writes

	lock    *os.File // the advisory lock that keeps other processes out
	reqs    chan *appendReq
	saves   chan *saveReq
	claims  chan *claimReq // see EmailClaims
	holds   chan *holdReq  // see hold, in backup.go
	closing chan struct{}  // closed by Close: stop taking work
	stopped chan struct{}  // closed when the writer goroutine has returned
	once    sync.Once

	wakeMu sync.Mutex
	wake   chan struct{} // closed and replaced after every commit

	// The latest committed events, handed to the feed's consumers without
	// reading them back (see tail).
	tail tail

	// Counters for tests, and metrics some day.
	accepted atomic.Int64 // appends handed to the writer
	commits  atomic.Int64 // committed batches

	// Prepared once, not parsed again for every append.
	insert, maxSeq, savepoint, release, rollbackTo, saveProgressQ *sql.Stmt // on w
	journalInsert                                                 *sql.Stmt // on w
	journal                                                       keyJournal
	loadQ, loadPageQ, feedQ, headQ, progressQ, versionQ           *sql.Stmt // on r

	syncsMu sync.Mutex
	syncs   map[string]func() error // by consumer: see SyncBeforeSave
}

// OpenStore opens (creating if needed) the event store at path, brings its schema
// up to date and starts the writer. The caller must Close the store.
func OpenStore(path string, opts Options) (*Store, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.busyTimeout <= 0 {
		opts.busyTimeout = defaultBusyTimeout
	}
	if opts.FeedBatch <= 0 {
		opts.FeedBatch = DefaultFeedBatch
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = DefaultProgressEvery
	}
	s := &Store{
		up:            opts.Upcaster,
		log:           opts.Logger,
		maxBatch:      opts.MaxBatch,
		feedBatch:     opts.FeedBatch,
		progressEvery: opts.ProgressEvery,
		subs:          map[string]*atomic.Int64{},
		leases:        leases{held: map[string]lease{}, epochs: map[string]int64{}, now: time.Now},
		health:        store.NewHealth("sqlite", opts.Logger),
		reqs:          make(chan *appendReq, opts.MaxBatch),
		saves:         make(chan *saveReq, 16),
		claims:        make(chan *claimReq, opts.MaxBatch),
		holds:         make(chan *holdReq),
		closing:       make(chan struct{}),
		stopped:       make(chan struct{}),
		wake:          make(chan struct{}),
		tail:          tail{max: defaultTailEvents, up: opts.Upcaster},
	}
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.openDBs(path, opts.busyTimeout); err != nil {
		return nil, errors.Join(err, s.closeDBs())
	}
	go s.writeLoop()
	return s, nil
}

func (s *Store) openDBs(path string, busy time.Duration) (err error) {
	ctx := context.Background()
	// synchronous=FULL: see the package comment.
	if s.w, s.r, err = openDB(ctx, path, "sqlite/events",
		dbOptions{Synchronous: "FULL", BusyTimeout: busy}); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	// The writer goroutine relies on the savepoints of its batch living on
	// the writer's one connection.

	prepare := func(db *sql.DB, dst **sql.Stmt, query string) {
		if err != nil {
			return
		}
		if *dst, err = db.PrepareContext(ctx, query); err != nil {
			err = fmt.Errorf("sqlite: prepare %q: %w", query, err)
		}
	}
	prepare(s.w, &s.insert, insertSQL)
	prepare(s.w, &s.journalInsert, journalInsertSQL)
	prepare(s.w, &s.maxSeq, `SELECT coalesce(max(sequence), 0) FROM events WHERE aggregate_id = ?`)
	prepare(s.w, &s.savepoint, `SAVEPOINT req`)
	prepare(s.w, &s.release, `RELEASE req`)
	prepare(s.w, &s.rollbackTo, `ROLLBACK TO req`)
	prepare(s.w, &s.saveProgressQ, `INSERT INTO feed_progress (consumer, position) VALUES (?, ?)
		ON CONFLICT (consumer) DO UPDATE SET position = max(position, excluded.position)`)
	prepare(s.r, &s.progressQ, `SELECT position FROM feed_progress WHERE consumer = ?`)
	prepare(s.r, &s.loadQ, selectEventsSQL+` WHERE aggregate_id = ? AND sequence > ? ORDER BY sequence`)
	prepare(s.r, &s.loadPageQ, selectEventsSQL+` WHERE aggregate_id = ? AND sequence > ? ORDER BY sequence LIMIT ?`)
	prepare(s.r, &s.feedQ, selectEventsSQL+` WHERE position > ? ORDER BY position LIMIT ?`)
	prepare(s.r, &s.headQ, `SELECT coalesce(max(position), 0) FROM events`)
	prepare(s.r, &s.versionQ, versionSQL)
	return err
}

// Close stops the writer, fails the appends still queued with
// store.ErrClosed, wakes blocked ReadFeed and Subscribe calls and closes the database. It
// waits for the batch being committed, if any. Calling it again returns
// store.ErrClosed.
func (s *Store) Close() error {
	err := store.ErrClosed
	s.once.Do(func() {
		close(s.closing)
		<-s.stopped
		err = s.closeDBs()
	})
	return err
}

func (s *Store) closeDBs() error {
	var firstErr error
	for _, st := range []*sql.Stmt{s.insert, s.journalInsert, s.maxSeq, s.savepoint, s.release, s.rollbackTo, s.saveProgressQ,
		s.loadQ, s.loadPageQ, s.feedQ, s.headQ, s.progressQ, s.versionQ} {
		if st != nil {
			_ = st.Close() // closing the DB below reports what matters
		}
	}
	for _, db := range []*sql.DB{s.r, s.w} {
		if db == nil {
			continue
		}
		if err := db.Close(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("sqlite: close: %w", err)
		}
	}
	if s.lock != nil {
		_ = s.lock.Close() // closing the file releases the lock
	}
	return firstErr
}

func (s *Store) isClosed() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// wakeChan returns the channel that the next commit closes. Feed readers take
// it before they query, so a commit that lands between their query and their
// wait still wakes them.
func (s *Store) wakeChan() <-chan struct{} {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	return s.wake
}

func (s *Store) notify() {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	close(s.wake)
	s.wake = make(chan struct{})
}

var (
	_ store.Store  = (*Store)(nil)
	_ store.Feed   = (*Store)(nil)
	_ store.Leases = (*Store)(nil)
)
