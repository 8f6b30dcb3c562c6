// The read models (readmodel.Views) are in a SQLite database of their
// own, separate from the event store's file, so that projection writes never
// wait for the event writer's lock, nor it for them.

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

	// With WithRowCache, the rows kept in memory; else nil.
	orders    *rowCache[readmodel.Order]
	customers *rowCache[readmodel.Customer]

	// With FencedBy, the leases whose fences Apply checks; else nil.
	fences *leases

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

// OpenViews opens, creating it if needed, the views database at path and brings
// its schema up to date. It returns an error if the file cannot be opened
// or migrated.
func OpenViews(path string, log *zap.Logger, opts ...ViewsOption) (*Views, error) {
	// synchronous(FULL): Apply returning nil is what lets the feed record
	// the batch as handled, in the event store's file. A commit that a power
	// loss took back (as NORMAL allows in WAL mode) would leave the rows
	// behind the feed's progress for good: the next event of such a row
	// would be a gap, and a min_version read would wait for ever. (When the
	// projector's checkpoint lived in this file, in the same transaction as
	// the rows, both went back together and NORMAL was enough.)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	write, read, err := openDB(ctx, path, "sqlite/views", dbOptions{Synchronous: "FULL"})
	if err != nil {
		return nil, fmt.Errorf("sqlite: views: %w", err)
	}
	v := &Views{write: write, read: read, log: log}
	for _, opt := range opts {
		opt(v)
	}
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
