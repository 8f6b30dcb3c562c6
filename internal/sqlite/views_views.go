// The read models (readmodel.Views) are in a SQLite database of their
// own, separate from the event store's file, so that projection writes never
// wait for the event writer's lock, nor it for them.

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// Views is the SQLite backend of the read models. Apply, a store.Handler,
// writes them; they implement the readmodel.Views that queries read. It is
// safe for concurrent use, also by several Views on one file, unless they
// keep rows in memory (WithRowCache).
type Views struct {
	write *sql.DB // one connection: SQLite has one writer at a time anyway
	read  *sql.DB // a pool of read-only connections; WAL lets them run beside the writer
	log   *zap.Logger
	stmts statements
	reads readStatements

	// applying is held by Apply from its transaction's begin to its update
	// of the row cache, so that batches update the cache in the order they
	// committed (see rowCache). Apply has callers at once: during a
	// rebuild's catch-up the rebuilder's replay and the projector both
	// write the generation it builds. The one write connection orders
	// their transactions anyway; without this, a batch that committed
	// first could put its rows after one that committed later wrote newer
	// ones, which the cache no longer held (dropped, or evicted): rows
	// behind the file, answered until evicted, and a read went back.
	applying sync.Mutex

	// With WithRowCache, the rows kept in memory; else nil.
	orders    *rowCache[readmodel.Order]
	customers *rowCache[readmodel.Customer]

	// With FencedBy, the leases whose fences Apply checks; else nil.
	fences *leases

	// With DeferSync, the file commits without an fsync and Sync makes
	// its commits durable; wal is the file Sync syncs.
	deferSync bool
	wal       string

	// Changes wakes the readers of the rows an Apply committed.
	readmodel.Changes
}

// ViewsOption configures OpenViews.
type ViewsOption func(*Views)

// WithRowCache keeps up to rows orders and as many customers in memory, in
// front of the file: a GET of one of them costs no SQL (wrk's GET of an
// order: see the README's Performance). The rows are those Apply wrote and
// reads found. Only for a Views that is the only writer of its file, as
// orderd's is (its data directory is locked): rows another writer changes
// would be answered stale from memory.
func WithRowCache(rows int) ViewsOption {
	return func(v *Views) {
		if rows > 0 {
			v.orders = newRowCache(rows, func(o readmodel.Order) int64 { return o.Version })
			v.customers = newRowCache(rows, func(c readmodel.Customer) int64 { return c.Version })
		}
	}
}

// FencedBy makes Apply refuse, with store.ErrFenced, a batch whose context
// carries a fence (store.WithFence) that is not the current epoch of s's
// lease: the check and the commit happen under s's leases' lock, so that
// no take comes in between. Without it a fence in the context is ignored.
func FencedBy(s *Store) ViewsOption {
	return func(v *Views) { v.fences = &s.leases }
}

// DeferSync has Apply commit without waiting for the disk
// (synchronous=NORMAL: the commit is in the WAL file, in order, but not
// fsynced) and Sync make every commit so far durable. Only for views
// whose feed progress is saved after a Sync of them (Config.ViewsConsumer):
// see OpenViews.
func DeferSync() ViewsOption {
	return func(v *Views) { v.deferSync = true }
}

// OpenViews opens, creating it if needed, the views database at path and brings
// its schema up to date. It returns an error if the file cannot be opened
// or migrated.
func OpenViews(path string, log *zap.Logger, opts ...ViewsOption) (*Views, error) {
	v := &Views{log: log, wal: path + "-wal"}
	for _, opt := range opts {
		opt(v)
	}
	// synchronous(FULL): Apply returning nil is what lets the feed record
	// the batch as handled, in the event store's file. A commit that a power
	// loss took back (as NORMAL allows in WAL mode) would leave the rows
	// behind the feed's progress for good: the next event of such a row
	// would be a gap, and a min_version read would wait for ever. (When the
	// projector's checkpoint lived in this file, in the same transaction as
	// the rows, both went back together and NORMAL was enough.)
	//
	// With DeferSync, NORMAL: the feed saves the progress only after Sync,
	// which makes every commit before it durable, so the saved progress is
	// never ahead of the views on the disk either; a power loss may take
	// back batches after it, which the projector, resuming from it, writes
	// again. One fsync per progress save (at most every ProgressEvery)
	// instead of one per batch.
	sync := "FULL"
	if v.deferSync {
		sync = "NORMAL"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	write, read, err := openDB(ctx, path, "sqlite/views", dbOptions{Synchronous: sync})
	if err != nil {
		return nil, fmt.Errorf("sqlite: views: %w", err)
	}
	v.write, v.read = write, read
	if err := v.stmts.prepare(ctx, write); err != nil {
		_ = v.Close()
		return nil, fmt.Errorf("sqlite: views: %s: %w", path, err)
	}
	if err := v.reads.prepare(ctx, read); err != nil {
		_ = v.Close()
		return nil, fmt.Errorf("sqlite: views: %s: %w", path, err)
	}
	log.Info("read model views open", zap.String("path", path))
	return v, nil
}

// Close closes the database. Queries and Apply fail after Close.
func (v *Views) Close() error {
	return errors.Join(v.stmts.close(), v.reads.close(), v.read.Close(), v.write.Close())
}

// Interface checks: the consumers define the interfaces, this backend
// promises to satisfy them.
var (
	_ store.Handler   = (*Views)(nil).Apply
	_ readmodel.Views = (*Views)(nil)
)

// Sync makes every batch Apply committed so far durable: with DeferSync,
// an fsync of the WAL file, which holds every commit since the last
// checkpoint (a checkpoint syncs the WAL before it copies it into the
// database, and the database before the WAL starts over, also under
// NORMAL); without, nothing, as each commit was synced already. No WAL
// file: everything is in the database, synced by the checkpoint that
// removed it.
func (v *Views) Sync() error {
	if !v.deferSync {
		return nil
	}
	f, err := os.Open(v.wal)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sqlite: views: sync: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sqlite: views: sync: %w", err)
	}
	return nil
}
