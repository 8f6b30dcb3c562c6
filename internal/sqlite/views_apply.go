package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

const (
	orderColumns    = `id, customer_id, status, items, tracking_number, carrier, cancelled_reason, version, created_at, updated_at`
	customerColumns = `id, email, first_name, last_name, phone, version, registered_at, updated_at`
	summaryColumns  = `order_id, status, item_count, quantity, version, created_at, updated_at`
)

// statements are the writer's statements, prepared once on its single
// connection and bound to each batch's transaction. Each upsert comes in
// multiRows sizes, of 1, 2, 4, … rows: a batch writes n rows with one
// statement per bit of n instead of one per row (database/sql and the
// driver cost about as much per statement as SQLite per row).
type statements struct {
	order, customer                            *sql.Stmt
	upsertOrder, upsertSummary, upsertCustomer [multiRows]*sql.Stmt
}

// multiRows is how many sizes of each upsert are prepared: up to
// 1<<(multiRows-1) rows a statement.
const multiRows = 7

// The upserts, each with a version guard: a row that is further along
// already is kept.
const (
	upsertOrderSQL = `INSERT INTO order_read_model (` + orderColumns + `) VALUES %s
			ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, status = excluded.status,
				items = excluded.items, tracking_number = excluded.tracking_number, carrier = excluded.carrier,
				cancelled_reason = excluded.cancelled_reason, version = excluded.version,
				created_at = excluded.created_at, updated_at = excluded.updated_at
			WHERE excluded.version > order_read_model.version`
	upsertSummarySQL = `INSERT INTO orders_by_customer (customer_id, ` + summaryColumns + `) VALUES %s
			ON CONFLICT (customer_id, order_id) DO UPDATE SET status = excluded.status,
				item_count = excluded.item_count, quantity = excluded.quantity, version = excluded.version,
				created_at = excluded.created_at, updated_at = excluded.updated_at
			WHERE excluded.version > orders_by_customer.version`
	upsertCustomerSQL = `INSERT INTO customers (` + customerColumns + `) VALUES %s
			ON CONFLICT (id) DO UPDATE SET email = excluded.email, first_name = excluded.first_name,
				last_name = excluded.last_name, phone = excluded.phone, version = excluded.version,
				registered_at = excluded.registered_at, updated_at = excluded.updated_at
			WHERE excluded.version > customers.version`
)

// The number of columns each upsert writes a row.
const (
	orderArgs    = 10
	summaryArgs  = 8
	customerArgs = 8
)

// multiRow returns query, a format with one %s, with n rows of cols
// placeholders each.
func multiRow(query string, n, cols int) string {
	row := "(?" + strings.Repeat(", ?", cols-1) + ")"
	return fmt.Sprintf(query, row+strings.Repeat(", "+row, n-1))
}

// readStatements are the queries' statements, prepared once on the read
// pool (database/sql prepares each on a connection the first time that
// connection runs it, and keeps it).
type readStatements struct {
	order, customer, summaries *sql.Stmt
}

// The reads of one row by its key, for the queries and for Apply.
const (
	selectOrder    = `SELECT ` + orderColumns + ` FROM order_read_model WHERE id = ?`
	selectCustomer = `SELECT ` + customerColumns + ` FROM customers WHERE id = ?`
)

func (s *readStatements) prepare(ctx context.Context, db *sql.DB) error {
	return prepareAll(ctx, db,
		toPrepare{&s.order, selectOrder},
		toPrepare{&s.customer, selectCustomer},
		toPrepare{&s.summaries, `SELECT ` + summaryColumns + ` FROM orders_by_customer
			WHERE customer_id = ? AND order_id > ? ORDER BY order_id LIMIT ?`},
	)
}

func (s *readStatements) close() error { return closeAll(s.order, s.customer, s.summaries) }

func (s *statements) prepare(ctx context.Context, db *sql.DB) error {
	stmts := []toPrepare{{&s.order, selectOrder}, {&s.customer, selectCustomer}}
	for i := range multiRows {
		stmts = append(stmts,
			toPrepare{&s.upsertOrder[i], multiRow(upsertOrderSQL, 1<<i, orderArgs)},
			toPrepare{&s.upsertSummary[i], multiRow(upsertSummarySQL, 1<<i, summaryArgs)},
			toPrepare{&s.upsertCustomer[i], multiRow(upsertCustomerSQL, 1<<i, customerArgs)})
	}
	return prepareAll(ctx, db, stmts...)
}

func (s *statements) close() error {
	all := []*sql.Stmt{s.order, s.customer}
	for i := range multiRows {
		all = append(all, s.upsertOrder[i], s.upsertSummary[i], s.upsertCustomer[i])
	}
	return closeAll(all...)
}

// toPrepare is a statement to prepare and where to keep it.
type toPrepare struct {
	dst   **sql.Stmt
	query string
}

// prepareAll prepares each statement on db, stopping at the first that
// fails.
func prepareAll(ctx context.Context, db *sql.DB, stmts ...toPrepare) error {
	for _, p := range stmts {
		stmt, err := db.PrepareContext(ctx, p.query)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", p.query, err)
		}
		*p.dst = stmt
	}
	return nil
}

// closeAll closes the statements that were prepared (not nil).
func closeAll(stmts ...*sql.Stmt) error {
	var errs []error
	for _, stmt := range stmts {
		if stmt != nil {
			errs = append(errs, stmt.Close())
		}
	}
	return errors.Join(errs...)
}

// Apply projects events in one transaction, then wakes the readers waiting
// on Changed. It is a store.Handler: the projector's feed calls it. Each row
// is loaded once per batch, projected with readmodel's pure functions and
// written once, if it changed. Events of aggregate types without views are
// skipped. An event at or below its row's version changes nothing, so a
// batch may be delivered again. On any error nothing is written: an event
// that skips past its row's version+1 returns an error wrapping
// readmodel.ErrGap (the feed never leaves gaps, so it reports a bug), and an
// event that does not decode or cannot start its row returns an error too.
//
// When Apply returns nil the batch is committed (durable, unless the views
// were opened with DeferSync: then once Sync returns) and every row is at
// least at its events' versions. The readers watching a row the batch held an event
// of are woken, even when the event was applied already: another orderd
// process may have written the row, and a wait here must still end.
func (v *Views) Apply(ctx context.Context, events []store.Event) (err error) {
	if !slices.ContainsFunc(events, projected) {
		return nil
	}
	// A batch takes milliseconds and is better finished than interrupted;
	// a context that can end costs database/sql and the driver a goroutine
	// per statement to watch it (a tenth of each statement's time here).
	ctx = context.WithoutCancel(ctx)
	release, err := v.fences.hold(ctx, "project a batch")
	if err != nil {
		return fmt.Errorf("sqlite: views: %w", err)
	}
	defer release() // after the commit below
	v.applying.Lock()
	defer v.applying.Unlock() // after the row cache's update below
	tx, err := v.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: views: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()

	b := batch{
		ctx: ctx, tx: tx, s: &v.stmts,
		loadOrder:    tx.StmtContext(ctx, v.stmts.order),
		loadCustomer: tx.StmtContext(ctx, v.stmts.customer),
		orders:       map[uuid.UUID]*dirty[readmodel.Order]{},
		customers:    map[uuid.UUID]*dirty[readmodel.Customer]{},
	}
	for _, e := range events {
		if err := b.apply(e); err != nil {
			return fmt.Errorf("sqlite: views: event %s (%s %s #%d at position %d): %w",
				e.ID, e.AggregateType, e.AggregateID, e.Sequence, e.Position, err)
		}
	}
	if err := b.flush(); err != nil {
		return fmt.Errorf("sqlite: views: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: views: commit %d events: %w", len(events), err)
	}
	cache(v.orders, b.orders)
	cache(v.customers, b.customers)
	v.Notify(b.ids()...)
	return nil
}

// cache records a committed batch's rows in c, if there is one: those it
// wrote as the file now has them; those it changed but did not write (the
// file has them further along) are dropped, since what c holds of them may
// be older.
func cache[T any](c *rowCache[T], rows map[uuid.UUID]*dirty[T]) {
	if c == nil {
		return
	}
	put := make(map[uuid.UUID]T, len(rows))
	var drop []uuid.UUID
	for id, d := range rows {
		switch {
		case d.written:
			put[id] = d.row
		case d.changed:
			drop = append(drop, id)
		}
	}
	if len(put) > 0 || len(drop) > 0 {
		c.applied(put, drop)
	}
}

// projected reports whether e's aggregate type has views here.
func projected(e store.Event) bool {
	return e.AggregateType == aggregate.OrderType || e.AggregateType == aggregate.CustomerType
}

// dirty is a row of the batch's cache, whether the batch changed it, and
// whether its upsert then changed the file (not if the file has the row
// further along already).
type dirty[T any] struct {
	row     T
	changed bool
	written bool
}

// batch is one Apply's transaction and its cache of rows, so that several
// events of one aggregate cost one read and one write.
type batch struct {
	ctx                     context.Context
	tx                      *sql.Tx
	s                       *statements
	loadOrder, loadCustomer *sql.Stmt // bound to tx
	orders                  map[uuid.UUID]*dirty[readmodel.Order]
	customers               map[uuid.UUID]*dirty[readmodel.Customer]
}

func (b *batch) apply(e store.Event) error {
	switch e.AggregateType {
	case aggregate.OrderType:
		d, ok := b.orders[e.AggregateID]
		if !ok && e.Sequence == 1 {
			// The batch holds the order's whole history: it is folded from
			// nothing, and the upsert's version guard keeps a row that is
			// further along already. No read needed.
			d = &dirty[readmodel.Order]{}
			b.orders[e.AggregateID] = d
		}
		if d == nil {
			o, err := scanOrder(b.loadOrder.QueryRowContext(b.ctx, e.AggregateID))
			if err != nil && !errors.Is(err, readmodel.ErrNotFound) {
				return err
			}
			d = &dirty[readmodel.Order]{row: o}
			b.orders[e.AggregateID] = d
		}
		changed, err := d.row.Apply(e)
		d.changed = d.changed || changed
		return err
	case aggregate.CustomerType:
		d, ok := b.customers[e.AggregateID]
		if !ok && e.Sequence == 1 {
			d = &dirty[readmodel.Customer]{} // as for orders
			b.customers[e.AggregateID] = d
		}
		if d == nil {
			c, err := scanCustomer(b.loadCustomer.QueryRowContext(b.ctx, e.AggregateID))
			if err != nil && !errors.Is(err, readmodel.ErrNotFound) {
				return err
			}
			d = &dirty[readmodel.Customer]{row: c}
			b.customers[e.AggregateID] = d
		}
		changed, err := d.row.Apply(e)
		d.changed = d.changed || changed
		return err
	}
	return nil // no view of this aggregate type
}

// ids returns the aggregates the batch held events of.
func (b *batch) ids() []uuid.UUID {
	ids := make([]uuid.UUID, 0, len(b.orders)+len(b.customers))
	for id := range b.orders {
		ids = append(ids, id)
	}
	for id := range b.customers {
		ids = append(ids, id)
	}
	return ids
}

// flush writes the rows the batch changed, several rows a statement. An
// order's id, customer and times go to both of its rows: they are turned
// into text, and boxed for database/sql, once.
func (b *batch) flush() error {
	var orders []*dirty[readmodel.Order]
	for _, d := range b.orders {
		if d.changed {
			orders = append(orders, d)
		}
	}
	shared := make([][4]any, len(orders)) // id, customer, created, updated
	for i, d := range orders {
		var ids [2]string
		uuidTexts(ids[:], d.row.ID, d.row.CustomerID)
		shared[i] = [4]any{ids[0], ids[1], formatTime(d.row.CreatedAt), formatTime(d.row.UpdatedAt)}
	}
	err := upsertRows(b, b.s.upsertOrder, len(orders), orderArgs, func(args []any, i int) ([]any, error) {
		o, sh := &orders[i].row, &shared[i]
		items, err := json.Marshal(o.Items)
		if err != nil {
			return nil, fmt.Errorf("encode items of order %s: %w", o.ID, err)
		}
		return append(args, sh[0], sh[1], o.Status, string(items), o.TrackingNumber, o.Carrier,
			o.CancelledReason, o.Version, sh[2], sh[3]), nil
	}, func(i int, written bool) { orders[i].written = written })
	if err != nil {
		return fmt.Errorf("write orders: %w", err)
	}
	// Whether a summary was written does not matter to the cache, which
	// keeps no summaries.
	err = upsertRows(b, b.s.upsertSummary, len(orders), summaryArgs, func(args []any, i int) ([]any, error) {
		s, sh := orders[i].row.Summary(), &shared[i]
		// A summary has its order's id and times.
		return append(args, sh[1], sh[0], s.Status, s.ItemCount, s.Quantity, s.Version, sh[2], sh[3]), nil
	}, func(int, bool) {})
	if err != nil {
		return fmt.Errorf("write the orders' summaries: %w", err)
	}
	var customers []*dirty[readmodel.Customer]
	for _, d := range b.customers {
		if d.changed {
			customers = append(customers, d)
		}
	}
	err = upsertRows(b, b.s.upsertCustomer, len(customers), customerArgs, func(args []any, i int) ([]any, error) {
		c := &customers[i].row
		return append(args, c.ID, c.Email, c.FirstName, c.LastName, c.Phone,
			c.Version, formatTime(c.RegisteredAt), formatTime(c.UpdatedAt)), nil
	}, func(i int, written bool) { customers[i].written = written })
	if err != nil {
		return fmt.Errorf("write customers: %w", err)
	}
	return nil
}

// upsertRows writes rows 0 to n-1 with the sizes of stmts (of 1, 2, 4, …
// rows), the largest first, appending each row's cols arguments with args,
// and tells written whether each row was written. A statement that
// changed fewer rows than it wrote (the version guard kept some: a batch
// handed again) tells it of none of its rows, which only keeps them out
// of the row cache.
func upsertRows(b *batch, stmts [multiRows]*sql.Stmt, n, cols int,
	args func(dst []any, row int) ([]any, error), written func(row int, ok bool)) error {
	buf := make([]any, 0, min(n, 1<<(multiRows-1))*cols)
	for first := 0; first < n; {
		size := min(bits.Len(uint(n-first)), multiRows) - 1
		rows := 1 << size
		buf = buf[:0]
		for i := first; i < first+rows; i++ {
			var err error
			if buf, err = args(buf, i); err != nil {
				return err
			}
		}
		res, err := b.tx.StmtContext(b.ctx, stmts[size]).ExecContext(b.ctx, buf...)
		if err != nil {
			return err
		}
		changed, err := res.RowsAffected()
		if err != nil {
			return err
		}
		for i := first; i < first+rows; i++ {
			written(i, changed == int64(rows))
		}
		first += rows
	}
	return nil
}
