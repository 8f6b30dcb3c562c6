package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

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
// connection and bound to each batch's transaction.
type statements struct {
	order, customer, upsertOrder, upsertSummary, upsertCustomer, checkpoint, setCheckpoint *sql.Stmt
}

func (s *statements) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&s.order, `SELECT ` + orderColumns + ` FROM order_read_model WHERE id = ?`},
		{&s.customer, `SELECT ` + customerColumns + ` FROM customers WHERE id = ?`},
		{&s.upsertOrder, `INSERT INTO order_read_model (` + orderColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, status = excluded.status,
				items = excluded.items, tracking_number = excluded.tracking_number, carrier = excluded.carrier,
				cancelled_reason = excluded.cancelled_reason, version = excluded.version,
				created_at = excluded.created_at, updated_at = excluded.updated_at`},
		{&s.upsertSummary, `INSERT INTO orders_by_customer (customer_id, ` + summaryColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (customer_id, order_id) DO UPDATE SET status = excluded.status,
				item_count = excluded.item_count, quantity = excluded.quantity, version = excluded.version,
				created_at = excluded.created_at, updated_at = excluded.updated_at`},
		{&s.upsertCustomer, `INSERT INTO customers (` + customerColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET email = excluded.email, first_name = excluded.first_name,
				last_name = excluded.last_name, phone = excluded.phone, version = excluded.version,
				registered_at = excluded.registered_at, updated_at = excluded.updated_at`},
		{&s.checkpoint, `SELECT position FROM projector_checkpoint WHERE name = ?`},
		// max() keeps the checkpoint from moving back when a batch that was
		// already committed is applied again.
		{&s.setCheckpoint, `INSERT INTO projector_checkpoint (name, position) VALUES (?, ?)
			ON CONFLICT (name) DO UPDATE SET position = max(position, excluded.position)`},
	} {
		stmt, err := db.PrepareContext(ctx, p.query)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", p.query, err)
		}
		*p.stmt = stmt
	}
	return nil
}

func (s *statements) close() error {
	var errs []error
	for _, stmt := range []*sql.Stmt{s.order, s.customer, s.upsertOrder, s.upsertSummary, s.upsertCustomer, s.checkpoint, s.setCheckpoint} {
		if stmt != nil {
			errs = append(errs, stmt.Close())
		}
	}
	return errors.Join(errs...)
}

// Checkpoint returns the feed position the views are up to date through, 0
// before the first Apply.
func (v *Views) Checkpoint(ctx context.Context) (int64, error) {
	var pos int64
	err := v.stmts.checkpoint.QueryRowContext(ctx, checkpointName).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("readmodel/sqlite: read checkpoint: %w", err)
	}
	return pos, nil
}

// Apply projects events and moves the checkpoint to through in one
// transaction, then wakes the readers waiting on Changed. Each row is loaded
// once per batch, projected with readmodel's pure functions and written
// once, if it changed. Events already reflected in a row change nothing, and
// the checkpoint never moves back, so a batch may be applied again. Events
// of aggregate types without views are skipped. On any error, including an
// event that does not decode or a sequence gap, nothing is written.
func (v *Views) Apply(ctx context.Context, events []store.Event, through int64) (err error) {
	tx, err := v.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("readmodel/sqlite: begin: %w", err)
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
			return fmt.Errorf("readmodel/sqlite: event %s (%s %s #%d at position %d): %w",
				e.ID, e.AggregateType, e.AggregateID, e.Sequence, e.Position, err)
		}
	}
	if err := b.flush(); err != nil {
		return fmt.Errorf("readmodel/sqlite: %w", err)
	}
	if _, err := tx.StmtContext(ctx, v.stmts.setCheckpoint).ExecContext(ctx, checkpointName, through); err != nil {
		return fmt.Errorf("readmodel/sqlite: set checkpoint %d: %w", through, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("readmodel/sqlite: commit through %d: %w", through, err)
	}
	v.Notify()
	return nil
}

// dirty is a row of the batch's cache and whether the batch changed it.
type dirty[T any] struct {
	row     T
	changed bool
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
		if !ok {
			o, err := scanOrder(b.loadOrder.QueryRowContext(b.ctx, e.AggregateID))
			if err != nil && !errors.Is(err, aggregate.ErrNotFound) {
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
		if !ok {
			c, err := scanCustomer(b.loadCustomer.QueryRowContext(b.ctx, e.AggregateID))
			if err != nil && !errors.Is(err, aggregate.ErrNotFound) {
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

// flush writes the rows the batch changed.
func (b *batch) flush() error {
	upsertOrder := b.tx.StmtContext(b.ctx, b.s.upsertOrder)
	upsertSummary := b.tx.StmtContext(b.ctx, b.s.upsertSummary)
	for id, d := range b.orders {
		if !d.changed {
			continue
		}
		o := d.row
		items, err := json.Marshal(o.Items)
		if err != nil {
			return fmt.Errorf("encode items of order %s: %w", id, err)
		}
		if _, err := upsertOrder.ExecContext(b.ctx, o.ID, o.CustomerID, o.Status, string(items),
			o.TrackingNumber, o.Carrier, o.CancelledReason, o.Version, formatTime(o.CreatedAt), formatTime(o.UpdatedAt)); err != nil {
			return fmt.Errorf("write order %s: %w", id, err)
		}
		s := o.Summary()
		if _, err := upsertSummary.ExecContext(b.ctx, o.CustomerID, s.ID, s.Status, s.ItemCount, s.Quantity,
			s.Version, formatTime(s.CreatedAt), formatTime(s.UpdatedAt)); err != nil {
			return fmt.Errorf("write order %s of customer %s: %w", id, o.CustomerID, err)
		}
	}
	upsertCustomer := b.tx.StmtContext(b.ctx, b.s.upsertCustomer)
	for id, d := range b.customers {
		if !d.changed {
			continue
		}
		c := d.row
		if _, err := upsertCustomer.ExecContext(b.ctx, c.ID, c.Email, c.FirstName, c.LastName, c.Phone,
			c.Version, formatTime(c.RegisteredAt), formatTime(c.UpdatedAt)); err != nil {
			return fmt.Errorf("write customer %s: %w", id, err)
		}
	}
	return nil
}
