package cql

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
)

// The messages project logs on a lost conditional write and on an
// uncertain one.
const (
	lostRace = "read model row moved on under a write; retrying"
	settling = "read model conditional write timed out; settling it with a serial read"
)

// staleRead is a table whose first read returns stale instead of the row:
// the copy a projector holds when another instance moves the row on between
// its read and its write.
type staleRead[R any] struct {
	table[R]
	stale *R
}

func (s *staleRead[R]) read(ctx context.Context, id uuid.UUID, c gocql.Consistency) (R, int64, error) {
	if r := s.stale; r != nil {
		s.stale = nil
		_, stamp, err := s.table.read(ctx, id, c) // the stamp as it is: plain or conditional
		return *r, stamp, err
	}
	return s.table.read(ctx, id, c)
}

// TestStaleWriteLoses has a projector write over a row that moved on since
// it read it, with plain writes (the version stamps) and with the
// conditional writes of rows an earlier release wrote: the newer row must
// stay, with its row in the customer's list. Plain, the write of version 2
// lands and loses to version 4 cell by cell, with no second round;
// conditional, it is refused and the retry finds its event applied.
// Without the stamps (a plain write at the clock's time) or the condition
// it would write version 2 over version 4.
func TestStaleWriteLoses(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		name        string
		conditional bool
		lost        int
	}{{"plain", false, 0}, {"conditional", true, 1}} {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			v := e.views(t, zap.New(core))
			v.conditionalRows = tt.conditional
			ctx := context.Background()
			id, order := deliveredOrder(t)
			if err := v.Apply(ctx, order); err != nil {
				t.Fatal(err)
			}
			want := foldOrder(t, order)

			stale := foldOrder(t, order[:1])
			if err := project(ctx, v, &staleRead[readmodel.Order]{table: orderTable{v}, stale: &stale}, id, order[1:2]); err != nil {
				t.Fatalf("project over a stale read: %v", err)
			}
			if n := logs.FilterMessage(lostRace).Len(); n != tt.lost {
				t.Errorf("lost conditional writes: %d, want %d", n, tt.lost)
			}
			checkOrder(t, v, want)
		})
	}
}

// TestGapRechecksSerially has the first read of a row miss writes another
// instance committed, as a read below the serial level may (at One, or in
// another datacenter): the event then looks like a gap, and project must
// re-read serially and apply it instead of reporting a bug.
func TestGapRechecksSerially(t *testing.T) {
	e := newEnv(t)
	v := e.views(t, nil)
	ctx := context.Background()
	id, order := deliveredOrder(t)
	if err := v.Apply(ctx, order[:3]); err != nil {
		t.Fatal(err)
	}

	stale := foldOrder(t, order[:1])
	if err := project(ctx, v, &staleRead[readmodel.Order]{table: orderTable{v}, stale: &stale}, id, order[3:]); err != nil {
		t.Fatalf("project after a stale read: %v", err)
	}
	want := foldOrder(t, order)
	if got, err := v.Order(ctx, id); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Order =\n%+v, %v\nwant\n%+v", got, err, want)
	}
}

// uncertainWrite is a table whose first write fails with err, an error
// that does not say whether the write was applied, after applying it when
// lands is true.
type uncertainWrite[R any] struct {
	table[R]
	lands  bool
	err    error
	writes int
}

func (u *uncertainWrite[R]) writeIf(ctx context.Context, r R, base int64) (bool, error) {
	u.writes++
	if u.writes > 1 {
		return u.table.writeIf(ctx, r, base)
	}
	if u.lands {
		if ok, err := u.table.writeIf(ctx, r, base); err != nil || !ok {
			return ok, err
		}
	}
	return false, fmt.Errorf("conditional write: %w", u.err)
}

// TestUncertainWriteSettles times out a conditional write (of a row an
// earlier release wrote), once after it landed and once before: the serial
// re-read must settle which, so that the events end applied exactly once,
// with the customer's list beside them.
func TestUncertainWriteSettles(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		name       string
		lands      bool
		err        error
		wantWrites int
	}{
		{"landed, server timeout", true, &gocql.RequestErrWriteTimeout{WriteType: "CAS"}, 1},
		{"lost, no response", false, gocql.ErrTimeoutNoResponse, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			v := e.views(t, zap.New(core))
			v.conditionalRows = true
			ctx := context.Background()
			id, order := deliveredOrder(t)
			if err := v.Apply(ctx, order[:1]); err != nil {
				t.Fatal(err)
			}

			tbl := &uncertainWrite[readmodel.Order]{table: orderTable{v}, lands: tt.lands, err: tt.err}
			if err := project(ctx, v, tbl, id, order[1:3]); err != nil {
				t.Fatalf("project: %v", err)
			}
			if tbl.writes != tt.wantWrites {
				t.Errorf("conditional writes: %d, want %d", tbl.writes, tt.wantWrites)
			}
			if n := logs.FilterMessage(settling).Len(); n != 1 {
				t.Errorf("settled uncertain writes: %d, want 1", n)
			}
			want := foldOrder(t, order[:3])
			checkOrder(t, v, want)
		})
	}
}

// TestRedeliveryRepairsCustomerList leaves the state of a projector that
// died between an order's write and the write of its customer's list: the feed delivers the batch again, since Apply never
// returned nil for it, and that must bring the list up to the row.
func TestRedeliveryRepairsCustomerList(t *testing.T) {
	e := newEnv(t)
	v := e.views(t, nil)
	ctx := context.Background()
	id, order := deliveredOrder(t)
	if err := v.Apply(ctx, order[:2]); err != nil {
		t.Fatal(err)
	}
	// The dead projector's write of #3, without the list's (the half of
	// the unlogged batch that landed).
	want := foldOrder(t, order[:3])
	items, err := json.Marshal(want.Items)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.plain(ctx, v.q.writeOrder, want.ID, want.CustomerID, want.Status, string(items), want.TrackingNumber,
		want.Carrier, want.CancelledReason, want.Version, want.CreatedAt, want.UpdatedAt, versionStamp(want.Version)); err != nil {
		t.Fatalf("write #3 alone: %v", err)
	}
	list, err := v.CustomerOrders(ctx, want.CustomerID, uuid.Nil, 10)
	if err != nil || len(list) != 1 || list[0].Version != 2 {
		t.Fatalf("list before the redelivery = %+v, %v; want the order at version 2", list, err)
	}

	if err := v.Apply(ctx, order[:3]); err != nil {
		t.Fatal(err)
	}
	if got, err := v.Order(ctx, id); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Order =\n%+v, %v\nwant\n%+v", got, err, want)
	}
	list, err = v.CustomerOrders(ctx, want.CustomerID, uuid.Nil, 10)
	if err != nil || !reflect.DeepEqual(list, []readmodel.OrderSummary{want.Summary()}) {
		t.Errorf("list after the redelivery =\n%+v, %v\nwant\n%+v", list, err, []readmodel.OrderSummary{want.Summary()})
	}
}

// TestRowsStampedWithVersion checks the write timestamps themselves, in
// generation 0 and in one a rebuild creates: every cell of an order's row,
// of its row in the customer's list and of a customer's row carries the
// version it holds, so that the next version always wins and an older one
// never does.
func TestRowsStampedWithVersion(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	catalog := e.catalog(t)
	for _, gen := range []int64{0, 1} {
		t.Run(fmt.Sprintf("generation %d", gen), func(t *testing.T) {
			g, err := catalog.Create(ctx, gen)
			if err != nil {
				t.Fatal(err)
			}
			v := g.(*Views)
			events := readmodeltest.Pipeline(t, 11)
			if err := v.Apply(ctx, events); err != nil {
				t.Fatal(err)
			}
			tb := tablesOf(gen)
			sess := v.session.Session
			for _, ev := range events {
				var stamps []int64
				var version int64
				switch ev.AggregateType {
				case "Order":
					o, err := v.Order(ctx, ev.AggregateID)
					if err != nil {
						t.Fatal(err)
					}
					version = o.Version
					var a, b, c, d, s1, s2 int64
					if err := sess.Query(`SELECT WRITETIME(status), WRITETIME(items), WRITETIME(version), WRITETIME(updated_at)
						FROM `+tb.orders+` WHERE id = ?`, o.ID).Scan(&a, &b, &c, &d); err != nil {
						t.Fatal(err)
					}
					if err := sess.Query(`SELECT WRITETIME(status), WRITETIME(version) FROM `+tb.summaries+`
						WHERE customer_id = ? AND order_id = ?`, o.CustomerID, o.ID).Scan(&s1, &s2); err != nil {
						t.Fatal(err)
					}
					stamps = []int64{a, b, c, d, s1, s2}
				case "Customer":
					cu, err := v.Customer(ctx, ev.AggregateID)
					if err != nil {
						t.Fatal(err)
					}
					version = cu.Version
					var a, b int64
					if err := sess.Query(`SELECT WRITETIME(email), WRITETIME(version) FROM `+tb.customers+` WHERE id = ?`,
						cu.ID).Scan(&a, &b); err != nil {
						t.Fatal(err)
					}
					stamps = []int64{a, b}
				}
				for _, s := range stamps {
					if s != versionStamp(version) {
						t.Errorf("%s %s at version %d: write timestamps %v, want all %d", ev.AggregateType, ev.AggregateID,
							version, stamps, versionStamp(version))
						break
					}
				}
			}
		})
	}
}

// TestConditionalRowsStayConditional upgrades a row an earlier release
// wrote with a lightweight transaction (its cells carry the clock's
// timestamp): the next events must still land on it, through the
// conditional path, since a plain write stamped with the version would be
// lost under the clock's timestamps and leave the row behind for good; and
// a redelivery of its old events must not move it back.
func TestConditionalRowsStayConditional(t *testing.T) {
	e := newEnv(t)
	v := e.views(t, nil)
	ctx := context.Background()
	id, order := deliveredOrder(t)
	old := foldOrder(t, order[:2])
	if ok, err := (orderTable{v}).writeIf(ctx, old, 0); err != nil || !ok {
		t.Fatalf("write version 2 as an earlier release did: applied %v, %v", ok, err)
	}
	if err := (orderTable{v}).written(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := v.Apply(ctx, order); err != nil {
		t.Fatal(err)
	}
	if err := v.Apply(ctx, order[:2]); err != nil {
		t.Fatal(err)
	}
	want := foldOrder(t, order)
	got, stamp, err := v.order(ctx, id, v.consistency)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Order =\n%+v, %v\nwant\n%+v", got, err, want)
	}
	if !conditionalRow(stamp) {
		t.Errorf("version cell written at %d, want the clock's (a lightweight transaction's)", stamp)
	}
	checkList(t, v, want)
}

// checkOrder asserts that want is the order's row and its customer's list
// (the customer has no other order).
func checkOrder(t *testing.T, v *Views, want readmodel.Order) {
	t.Helper()
	if got, err := v.Order(context.Background(), want.ID); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Order =\n%+v, %v\nwant\n%+v", got, err, want)
	}
	checkList(t, v, want)
}

// checkList asserts that want's summary is its customer's whole list.
func checkList(t *testing.T, v *Views, want readmodel.Order) {
	t.Helper()
	list, err := v.CustomerOrders(context.Background(), want.CustomerID, uuid.Nil, 10)
	if err != nil || !reflect.DeepEqual(list, []readmodel.OrderSummary{want.Summary()}) {
		t.Errorf("CustomerOrders =\n%+v, %v\nwant\n%+v", list, err, []readmodel.OrderSummary{want.Summary()})
	}
}

// TestOneLWTPerBatch counts the lightweight transactions of a fenced batch
// of 256 events over many orders: the fence check only, where every row
// write was one before (the conditional path, which the count also shows).
func TestOneLWTPerBatch(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		name        string
		conditional bool
	}{{"stamped", false}, {"conditional", true}} {
		t.Run(tt.name, func(t *testing.T) {
			c := NewRounds()
			v := e.countedViews(t, c)
			v.conditionalRows = tt.conditional
			ctx := e.fenced(t, context.Background())
			events := readmodeltest.Pipeline(t, 256)
			aggregates := map[uuid.UUID]bool{}
			for _, ev := range events {
				aggregates[ev.AggregateID] = true
			}
			lwts(c) // from zero
			if err := v.Apply(ctx, events); err != nil {
				t.Fatal(err)
			}
			want := int64(1)
			if tt.conditional {
				want += int64(len(aggregates))
			}
			n := int64(lwts(c))
			if n != want {
				t.Errorf("lightweight transactions for a batch of %d events of %d aggregates: %d, want %d",
					len(events), len(aggregates), n, want)
			}
			t.Logf("%s: %d lightweight transactions for a batch of %d events of %d aggregates", tt.name, n,
				len(events), len(aggregates))
		})
	}
}
