package cql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// versionStamp is the write timestamp (USING TIMESTAMP) of every write of
// version v of a read-model row: v itself. Cassandra keeps, cell by cell,
// the value written with the highest timestamp, on every replica and in
// every datacenter, whatever order the writes arrive in. Every write of a
// row is the whole row projected from its aggregate's events 1..v, so a
// row is always the projection of its greatest version written, and a
// redelivered, late or stale write of an older version changes nothing.
// Two writes of one version carry the same values (the projection of the
// same events), so their tie, which Cassandra breaks by value, is
// harmless. That holds across generations and rebuilds too: a rebuild's
// replay and the live projector both write version v of a row with
// timestamp v, so neither shadows the other's later version nor loses to
// its earlier one. No tiebreak bits are needed, and the version alone
// keeps the timestamps far below the clock's, inside ScyllaDB's limit on
// timestamps in the future (restrict_future_timestamp, three days).
//
// The consequence: these tables must never be written with the clock's
// timestamp (a plain write without USING TIMESTAMP, a DELETE without it, a
// lightweight transaction), which would shadow every later version for
// good. A row that is ever deleted must be deleted USING TIMESTAMP of the
// version that deletes it, so that a later re-insert at a higher version
// wins over the tombstone; none is today.
func versionStamp(v int64) int64 { return v }

// maxVersionStamp is above every timestamp versionStamp gives (no
// aggregate reaches 2^40 events) and far below the clock's, which a
// lightweight transaction writes with: its Paxos ballot, in microseconds
// since 1970, above 10^15 since 2001. A row whose version cell has a
// later write timestamp was written by a release before issue 17, whose
// every row write was a lightweight transaction; see conditionalRow.
const maxVersionStamp = 1 << 40

// conditionalRow reports whether a row whose version cell has write
// timestamp stamp must still be written with lightweight transactions: a
// row an earlier release wrote so carries the clock's timestamps, which a
// plain write at versionStamp could never overwrite. Such a row keeps its
// conditional writes (version-guarded, as before) until a rebuild
// (orderd rebuild) replaces its generation with one written by plain
// writes only; a row without such cells (new, or written by this release)
// never takes that path.
func conditionalRow(stamp int64) bool { return stamp > maxVersionStamp }

// table is how Apply reads, projects and writes the rows of one
// aggregate type, so that one generic loop (project) serves orders and
// customers alike.
type table[R any] interface {
	// read returns the aggregate's row, the zero R when it has none, and
	// the write timestamp of its version cell (0 for none).
	read(ctx context.Context, id uuid.UUID, c gocql.Consistency) (R, int64, error)
	// apply projects e onto r with readmodel's pure function.
	apply(r *R, e store.Event) (bool, error)
	version(r R) int64
	// write stores r, and what derives from it (see written), as plain
	// writes at versionStamp(version(r)): the rows end at r's version or
	// a greater one.
	write(ctx context.Context, r R) error
	// writeIf stores r if the row is still at version base (absent for
	// 0), reporting whether it was: a lightweight transaction, for the
	// rows an earlier release wrote so (see conditionalRow).
	writeIf(ctx context.Context, r R, base int64) (bool, error)
	// written writes what derives from r once r is stored.
	written(ctx context.Context, r R) error
}

// orderTable is order_read_model (of the Views' generation), with
// orders_by_customer beside it.
type orderTable struct{ v *Views }

func (t orderTable) read(ctx context.Context, id uuid.UUID, c gocql.Consistency) (readmodel.Order, int64, error) {
	o, stamp, err := t.v.order(ctx, id, c)
	if errors.Is(err, readmodel.ErrNotFound) {
		return readmodel.Order{}, 0, nil
	}
	return o, stamp, err
}

func (orderTable) apply(o *readmodel.Order, e store.Event) (bool, error) { return o.Apply(e) }
func (orderTable) version(o readmodel.Order) int64                       { return o.Version }

// write writes the order's row and its row in its customer's list in one
// unlogged batch: two partitions, written in parallel by the coordinator
// in one round trip from here, each stamped with the version. The batch is
// not atomic (an unlogged one has no batchlog); it need not be, since a
// write that lands alone is completed by the feed's redelivery (see
// written), and either row alone is a state the events reached.
func (t orderTable) write(ctx context.Context, o readmodel.Order) error {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return fmt.Errorf("encode items of order %s: %w", o.ID, err)
	}
	s := o.Summary()
	b := t.v.session.Session.NewBatch(gocql.UnloggedBatch).WithContext(ctx)
	b.SetConsistency(t.v.consistency)
	// Idempotent: the stamps make a repeat harmless, so the driver may
	// retry the batch.
	b.Entries = append(b.Entries,
		gocql.BatchEntry{Stmt: t.v.q.writeOrder, Idempotent: true, Args: []any{o.ID, o.CustomerID, o.Status, string(items),
			o.TrackingNumber, o.Carrier, o.CancelledReason, o.Version, o.CreatedAt, o.UpdatedAt, versionStamp(o.Version)}},
		gocql.BatchEntry{Stmt: t.v.q.writeSummary, Idempotent: true, Args: []any{o.CustomerID, s.ID, s.Status, s.ItemCount,
			s.Quantity, s.Version, s.CreatedAt, s.UpdatedAt, versionStamp(s.Version)}})
	if err := t.v.session.Session.ExecuteBatch(b); err != nil {
		return fmt.Errorf("write order %s with its row in the list of customer %s: %w", o.ID, o.CustomerID, err)
	}
	return nil
}

func (t orderTable) writeIf(ctx context.Context, o readmodel.Order, base int64) (bool, error) {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return false, fmt.Errorf("encode items of order %s: %w", o.ID, err)
	}
	if base == 0 {
		return t.v.cas(ctx, t.v.q.insertOrderIf, o.ID, o.CustomerID, o.Status, string(items), o.TrackingNumber,
			o.Carrier, o.CancelledReason, o.Version, o.CreatedAt, o.UpdatedAt)
	}
	return t.v.cas(ctx, t.v.q.updateOrderIf, o.CustomerID, o.Status, string(items), o.TrackingNumber,
		o.Carrier, o.CancelledReason, o.Version, o.CreatedAt, o.UpdatedAt, o.ID, base)
}

// written upserts the order's row in its customer's list alone, at
// versionStamp of the order's version like the order's own row: after a
// conditional write of the order (whose list row never had a condition),
// and when a redelivery finds the order at the version of its last event,
// which may be the feed's repeat after a crash that left the list behind
// (write's batch is not atomic, nor is a conditional write and this one).
// A projector that stalls before this write cannot, when it wakes, undo
// the list row of version n+1 that another projector wrote meanwhile.
//
// The partition is the customer's, but each of its rows holds the data of
// one order, stamped with that order's version: the versions of different
// orders never compete for a cell. The customer of an order never
// changes, so its list row never moves partition and is never deleted.
func (t orderTable) written(ctx context.Context, o readmodel.Order) error {
	s := o.Summary()
	err := t.v.plain(ctx, t.v.q.writeSummary, o.CustomerID, s.ID, s.Status, s.ItemCount, s.Quantity,
		s.Version, s.CreatedAt, s.UpdatedAt, versionStamp(s.Version))
	if err != nil {
		return fmt.Errorf("write order %s of customer %s: %w", o.ID, o.CustomerID, err)
	}
	return nil
}

// customerTable is customers.
type customerTable struct{ v *Views }

func (t customerTable) read(ctx context.Context, id uuid.UUID, c gocql.Consistency) (readmodel.Customer, int64, error) {
	cu, stamp, err := t.v.customer(ctx, id, c)
	if errors.Is(err, readmodel.ErrNotFound) {
		return readmodel.Customer{}, 0, nil
	}
	return cu, stamp, err
}

func (customerTable) apply(c *readmodel.Customer, e store.Event) (bool, error) { return c.Apply(e) }
func (customerTable) version(c readmodel.Customer) int64                       { return c.Version }

// write writes the customer's row; nothing derives from it.
func (t customerTable) write(ctx context.Context, c readmodel.Customer) error {
	return t.v.plain(ctx, t.v.q.writeCustomer, c.ID, c.Email, c.FirstName, c.LastName, c.Phone,
		c.Version, c.RegisteredAt, c.UpdatedAt, versionStamp(c.Version))
}

func (t customerTable) writeIf(ctx context.Context, c readmodel.Customer, base int64) (bool, error) {
	if base == 0 {
		return t.v.cas(ctx, t.v.q.insertCustomerIf, c.ID, c.Email, c.FirstName, c.LastName, c.Phone,
			c.Version, c.RegisteredAt, c.UpdatedAt)
	}
	return t.v.cas(ctx, t.v.q.updateCustomerIf, c.Email, c.FirstName, c.LastName, c.Phone,
		c.Version, c.RegisteredAt, c.UpdatedAt, c.ID, base)
}

func (customerTable) written(context.Context, readmodel.Customer) error { return nil }

// plain runs a write whose timestamp is among its arguments (USING
// TIMESTAMP ?). The timestamp makes a repeat harmless, so the driver may
// retry it.
func (v *Views) plain(ctx context.Context, stmt string, args ...any) error {
	return v.session.Session.Query(stmt, args...).WithContext(ctx).Consistency(v.consistency).Idempotent(true).Exec()
}

// cas runs a conditional write and reports whether it was applied. A
// refused condition returns the row's current values; Apply re-reads
// instead, so gocqlx's ExecCAS, which scans and drops them, suits.
func (v *Views) cas(ctx context.Context, stmt string, args ...any) (bool, error) {
	q := v.session.ContextQuery(ctx, stmt, nil).Bind(args...)
	q.Consistency(v.consistency)
	q.SerialConsistency(v.serial)
	applied, err := q.ExecCASRelease()
	if err != nil {
		return false, fmt.Errorf("conditional write: %w", err)
	}
	return applied, nil
}

// order reads one order row at consistency c, with the write timestamp of
// its version cell. A missing row is an error wrapping
// readmodel.ErrNotFound.
func (v *Views) order(ctx context.Context, id uuid.UUID, c gocql.Consistency) (readmodel.Order, int64, error) {
	var (
		o     readmodel.Order
		items string
		stamp *int64
	)
	err := v.session.Session.Query(v.q.selectOrder, id).WithContext(ctx).Consistency(c).Idempotent(true).Scan(&o.ID, &o.CustomerID,
		&o.Status, &items, &o.TrackingNumber, &o.Carrier, &o.CancelledReason, &o.Version, &o.CreatedAt, &o.UpdatedAt, &stamp)
	if errors.Is(err, gocql.ErrNotFound) {
		return readmodel.Order{}, 0, readmodel.ErrNotFound
	}
	if err != nil {
		return readmodel.Order{}, 0, err
	}
	if err := json.Unmarshal([]byte(items), &o.Items); err != nil {
		return readmodel.Order{}, 0, fmt.Errorf("order %s: items: %w", id, err)
	}
	o.CreatedAt, o.UpdatedAt = utc(o.CreatedAt), utc(o.UpdatedAt)
	return o, deref(stamp), nil
}

// customer reads one customer row at consistency c, with the write
// timestamp of its version cell and the same not-found convention as
// order.
func (v *Views) customer(ctx context.Context, id uuid.UUID, c gocql.Consistency) (readmodel.Customer, int64, error) {
	var (
		cu    readmodel.Customer
		stamp *int64
	)
	err := v.session.Session.Query(v.q.selectCustomer, id).WithContext(ctx).Consistency(c).Idempotent(true).Scan(&cu.ID, &cu.Email,
		&cu.FirstName, &cu.LastName, &cu.Phone, &cu.Version, &cu.RegisteredAt, &cu.UpdatedAt, &stamp)
	if errors.Is(err, gocql.ErrNotFound) {
		return readmodel.Customer{}, 0, readmodel.ErrNotFound
	}
	if err != nil {
		return readmodel.Customer{}, 0, err
	}
	cu.RegisteredAt, cu.UpdatedAt = utc(cu.RegisteredAt), utc(cu.UpdatedAt)
	return cu, deref(stamp), nil
}
