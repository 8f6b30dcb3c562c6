package scylla_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/scylladb/gocqlx/v3"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/scylla"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/cqltest"
	storescylla "github.com/orderd/orderd/internal/store/scylla"
)

// env is one test's keyspace: the Scylla event store on it (whose Open
// applies every file of migrations/scylla, the views' included) and a
// session for views.
type env struct {
	t     testing.TB
	hosts []string
	ks    string
	store *storescylla.Store
}

// newEnv creates a fresh keyspace through the event store's Open, which
// applies every file of migrations/scylla (the views' 01xx files among
// them) as production does; cqltest drops it when the test ends. Without a
// CQL node the test skips, or fails under CI=true.
func newEnv(t testing.TB) *env {
	t.Helper()
	hosts := cqltest.Hosts(t)
	ks := cqltest.Keyspace(t, hosts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := storescylla.Open(ctx, storescylla.Config{Hosts: hosts, Keyspace: ks, Timeout: 15 * time.Second},
		storescylla.Options{Upcaster: aggregate.Upcasters()})
	if err != nil {
		t.Fatalf("open store on keyspace %s: %v", ks, err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &env{t: t, hosts: hosts, ks: ks, store: st}
}

// session opens a session on keyspace ("": none), closed when the test
// ends.
func session(t testing.TB, hosts []string, keyspace string) gocqlx.Session {
	t.Helper()
	c := gocql.NewCluster(hosts...)
	c.Keyspace = keyspace
	// A loaded 2-vCPU node can take seconds over a contended Paxos round.
	c.Timeout, c.ConnectTimeout = 15*time.Second, 15*time.Second
	s, err := gocqlx.WrapSession(c.CreateSession())
	if err != nil {
		t.Fatalf("connect to %v: %v", hosts, err)
	}
	t.Cleanup(s.Close)
	return s
}

// views returns views on the env's keyspace, each over a session of its
// own as a separate orderd process would have, healing from the store.
func (e *env) views(log *zap.Logger, opts ...scylla.Option) *scylla.Views {
	e.t.Helper()
	return e.viewsWith(e.store, log, opts...)
}

// viewsWith is views healing from h.
func (e *env) viewsWith(h scylla.History, log *zap.Logger, opts ...scylla.Option) *scylla.Views {
	e.t.Helper()
	if log == nil {
		log = zap.NewNop()
	}
	return scylla.New(session(e.t, e.hosts, e.ks), h, log, opts...)
}

// appendAll stores events in the event store, each after the one before of
// its aggregate, so that History has them.
func (e *env) appendAll(events []store.Event) {
	e.t.Helper()
	for _, ev := range events {
		ev.Position = 0
		if err := e.store.Append(context.Background(), ev.AggregateID, ev.Sequence-1, []store.Event{ev}); err != nil {
			e.t.Fatalf("append %s #%d: %v", ev.AggregateID, ev.Sequence, err)
		}
	}
}

// t0 has nanoseconds, so the tests see the views keep milliseconds.
var t0 = time.Date(2025, 3, 1, 9, 30, 0, 123456789, time.UTC)

func at(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }

// ms is t as this backend keeps it.
func ms(t time.Time) time.Time { return t.Truncate(time.Millisecond) }

// feed numbers events as a feed would: positions from 1 on, in slice order.
type feed struct {
	t      testing.TB
	events []store.Event
}

func (f *feed) add(aggType string, id uuid.UUID, seq int64, ev aggregate.Event) *feed {
	f.t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		f.t.Fatalf("marshal %T: %v", ev, err)
	}
	f.events = append(f.events, store.Event{
		ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: aggType, Sequence: seq,
		Type: ev.EventType(), SchemaVersion: aggregate.SchemaVersion(ev.EventType()), Data: data,
		Timestamp: t0, Position: int64(len(f.events) + 1),
	})
	return f
}

var (
	orderA   = uuid.MustParse("0195a000-0000-7000-8000-00000000000a")
	orderB   = uuid.MustParse("0195a000-0000-7000-8000-00000000000b")
	customer = uuid.MustParse("0195a000-0000-7000-8000-0000000000c1")
	product  = uuid.MustParse("0195a000-0000-7000-8000-0000000000a1")
	product2 = uuid.MustParse("0195a000-0000-7000-8000-0000000000a2")
)

// lifecycle is a customer with one shipped and one cancelled order,
// interleaved as a real feed has them, with an event of an aggregate type
// that has no view.
func lifecycle(t testing.TB) []store.Event {
	f := &feed{t: t}
	items := []aggregate.Item{{ProductID: product, Quantity: 3}, {ProductID: product2, Quantity: 1}}
	f.add(aggregate.CustomerType, customer, 1, aggregate.CustomerRegistered{Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", RegisteredAt: at(0)})
	f.add(aggregate.OrderType, orderA, 1, aggregate.OrderCreated{CustomerID: customer, Items: items, CreatedAt: at(1)})
	f.add(aggregate.OrderType, orderB, 1, aggregate.OrderCreated{CustomerID: customer, Items: items[:1], CreatedAt: at(2)})
	f.add(aggregate.OrderType, orderA, 2, aggregate.OrderConfirmed{ConfirmedAt: at(3)})
	f.add("Warehouse", uuid.MustParse("0195a000-0000-7000-8000-0000000000f1"), 1, aggregate.OrderConfirmed{ConfirmedAt: at(3)})
	f.add(aggregate.OrderType, orderB, 2, aggregate.OrderCancelled{Reason: "duplicate", CancelledAt: at(4)})
	f.add(aggregate.OrderType, orderA, 3, aggregate.OrderShipped{TrackingNumber: "T-1", Carrier: "DHL", ShippedAt: at(5)})
	f.add(aggregate.CustomerType, customer, 2, aggregate.CustomerPhoneChanged{Phone: "+441234567890", ChangedAt: at(6)})
	return f.events
}

// The rows lifecycle leaves, with times kept to the millisecond.
var (
	wantA = readmodel.Order{
		ID: orderA, CustomerID: customer, Status: readmodel.StatusShipped,
		Items:          []aggregate.Item{{ProductID: product, Quantity: 3}, {ProductID: product2, Quantity: 1}},
		TrackingNumber: "T-1", Carrier: "DHL", Version: 3, CreatedAt: ms(at(1)), UpdatedAt: ms(at(5)),
	}
	wantB = readmodel.Order{
		ID: orderB, CustomerID: customer, Status: readmodel.StatusCancelled, Items: []aggregate.Item{{ProductID: product, Quantity: 3}},
		CancelledReason: "duplicate", Version: 2, CreatedAt: ms(at(2)), UpdatedAt: ms(at(4)),
	}
	wantCustomer = readmodel.Customer{
		ID: customer, Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", Phone: "+441234567890",
		Version: 2, RegisteredAt: ms(at(0)), UpdatedAt: ms(at(6)),
	}
)
