package readmodel_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
	eventstore "github.com/orderd/orderd/internal/store/sqlite"
)

// history appends to a real event store, keeping each aggregate's version.
type history struct {
	t        *testing.T
	st       store.Store
	versions map[uuid.UUID]int64
}

func openHistory(t *testing.T) *history {
	t.Helper()
	st, err := eventstore.Open(filepath.Join(t.TempDir(), "events.db"), eventstore.Options{})
	if err != nil {
		t.Fatalf("open event store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &history{t: t, st: st, versions: map[uuid.UUID]int64{}}
}

func (h *history) append(aggType string, id uuid.UUID, evs ...aggregate.Event) {
	h.t.Helper()
	expected := h.versions[id]
	batch := make([]store.Event, len(evs))
	for i, ev := range evs {
		batch[i] = envelope(h.t, aggType, id, expected+int64(i)+1, ev)
	}
	if err := h.st.Append(context.Background(), id, expected, batch); err != nil {
		h.t.Fatalf("append %s %s: %v", aggType, id, err)
	}
	h.versions[id] = expected + int64(len(evs))
}

func (h *history) head() int64 {
	h.t.Helper()
	pos, err := h.st.Head(context.Background())
	if err != nil {
		h.t.Fatalf("Head: %v", err)
	}
	return pos
}

// recorder passes everything to the real views and notes the positions of
// the events it was given, so the test sees what was applied, and when.
type recorder struct {
	readmodel.Writer
	mu        sync.Mutex
	positions []int64
}

func (r *recorder) Apply(ctx context.Context, events []store.Event, through int64) error {
	r.mu.Lock()
	for _, e := range events {
		r.positions = append(r.positions, e.Position)
	}
	r.mu.Unlock()
	return r.Writer.Apply(ctx, events, through)
}

// serve runs p until the returned stop is called, which returns Serve's
// error. The test's cleanup stops it too, so that it never logs after the
// test has ended.
func serve(t *testing.T, p *readmodel.Projector) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("Serve did not return within 10s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestProjectorFollowsTheStore(t *testing.T) {
	h := openHistory(t)
	viewsPath := filepath.Join(t.TempDir(), "views.db")
	ctx := context.Background()
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	orderA, orderB, orderC := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	items := []aggregate.Item{{ProductID: product1, Quantity: 2}, {ProductID: product2, Quantity: 1}}

	// First run: the projector starts on an empty store and follows the
	// appends as they commit, in batches of three.
	views := openViews(t, viewsPath)
	p := readmodel.NewProjector(h.st, views, zaptest.NewLogger(t), readmodel.WithBatchSize(3))
	stop := serve(t, p)
	h.append(aggregate.CustomerType, custID, aggregate.CustomerRegistered{Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", RegisteredAt: at(0)})
	h.append(aggregate.OrderType, orderA, aggregate.OrderCreated{CustomerID: custID, Items: items, CreatedAt: at(1)})
	h.append(aggregate.OrderType, orderB, aggregate.OrderCreated{CustomerID: custID, Items: items, CreatedAt: at(2)}, aggregate.OrderItemsUpdated{Items: items[:1], UpdatedAt: at(3)})
	h.append("Warehouse", uuid.Must(uuid.NewV7()), aggregate.OrderConfirmed{ConfirmedAt: at(3)}) // no view: skipped
	h.append(aggregate.OrderType, orderA, aggregate.OrderConfirmed{ConfirmedAt: at(4)}, aggregate.OrderShipped{TrackingNumber: "T-1", Carrier: "DHL", ShippedAt: at(5)})
	h.append(aggregate.OrderType, orderB, aggregate.OrderCancelled{Reason: "duplicate", CancelledAt: at(6)})
	h.append(aggregate.CustomerType, custID, aggregate.CustomerEmailChanged{Email: "ada@lovelace.example", ChangedAt: at(7)})

	q := readmodel.NewQueries(views, 10*time.Second)
	mustOrder(t, q, orderA, 3, readmodel.StatusShipped)
	mustOrder(t, q, orderB, 3, readmodel.StatusCancelled)
	if c, err := q.Customer(ctx, custID, 2); err != nil || c.Version != 2 || c.Email != "ada@lovelace.example" {
		t.Fatalf("Customer(min 2) = %+v, %v", c, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Serve returned %v after cancel, want nil", err)
	}
	head1 := h.head()
	if cp, err := views.Checkpoint(ctx); err != nil || cp != head1 || p.Position() != head1 {
		t.Fatalf("after the first run: checkpoint %d (%v), Position %d; want the store's head %d", cp, err, p.Position(), head1)
	}
	if err := views.Close(); err != nil {
		t.Fatal(err)
	}

	// Second run, as after a restart: new views handle, new projector. It
	// must pick up exactly after the checkpoint, whether the events were
	// appended while it was down or after it started.
	h.append(aggregate.OrderType, orderA, aggregate.OrderDelivered{DeliveredAt: at(8)})
	views = openViews(t, viewsPath)
	rec := &recorder{Writer: views}
	p = readmodel.NewProjector(h.st, rec, zaptest.NewLogger(t), readmodel.WithBatchSize(3))
	stop = serve(t, p)
	h.append(aggregate.OrderType, orderC, aggregate.OrderCreated{CustomerID: custID, Items: items, CreatedAt: at(9)})
	h.append(aggregate.CustomerType, custID, aggregate.CustomerPhoneChanged{Phone: "+441234567890", ChangedAt: at(10)})

	q = readmodel.NewQueries(views, 10*time.Second)
	mustOrder(t, q, orderA, 4, readmodel.StatusDelivered)
	mustOrder(t, q, orderC, 1, readmodel.StatusCreated)
	if c, err := q.Customer(ctx, custID, 3); err != nil || c.Version != 3 || c.Phone != "+441234567890" || c.Email != "ada@lovelace.example" {
		t.Fatalf("Customer(min 3) = %+v, %v", c, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("second Serve returned %v, want nil", err)
	}
	head2 := h.head()
	if cp, _ := views.Checkpoint(ctx); cp != head2 || p.Position() != head2 {
		t.Fatalf("after the second run: checkpoint %d, Position %d; want %d", cp, p.Position(), head2)
	}
	if want := []int64{head1 + 1, head1 + 2, head1 + 3}; !reflect.DeepEqual(rec.positions, want) {
		t.Errorf("second run applied positions %v, want exactly %v", rec.positions, want)
	}
	// Nothing was applied twice: each row is at its aggregate's version.
	for _, o := range []struct {
		id      uuid.UUID
		version int64
	}{{orderA, 4}, {orderB, 3}, {orderC, 1}} {
		got, err := q.Order(ctx, o.id, 0)
		if err != nil || got.Version != o.version || got.Version != h.versions[o.id] {
			t.Errorf("order %s: version %d (%v), want %d", o.id, got.Version, err, o.version)
		}
	}
	list, err := q.CustomerOrders(ctx, custID, uuid.Nil, 10)
	if err != nil || len(list) != 3 {
		t.Errorf("CustomerOrders = %d rows (%v), want 3", len(list), err)
	}
}

func TestProjectorStopsOnUndecodableEvent(t *testing.T) {
	h := openHistory(t)
	views := openViews(t, filepath.Join(t.TempDir(), "views.db"))
	ctx := context.Background()
	h.append(aggregate.CustomerType, custID, aggregate.CustomerRegistered{Email: "ada@example.com", RegisteredAt: t0})
	good := h.head()
	bad := envelope(t, aggregate.OrderType, orderID, 1, aggregate.OrderCreated{CustomerID: custID, CreatedAt: t0})
	bad.Data = json.RawMessage(`{"customer_id": 42}`)
	if err := h.st.Append(ctx, orderID, 0, []store.Event{bad}); err != nil {
		t.Fatal(err)
	}

	// Batches of one, so the good event commits before the bad one fails.
	p := readmodel.NewProjector(h.st, views, zaptest.NewLogger(t), readmodel.WithBatchSize(1))
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Serve returned nil on an undecodable event")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop on an undecodable event")
	}
	if cp, _ := views.Checkpoint(ctx); cp != good || p.Position() != good {
		t.Errorf("checkpoint %d, Position %d; want %d, before the bad event", cp, p.Position(), good)
	}
	if _, err := views.Order(ctx, orderID); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("order of the bad event: %v, want ErrNotFound", err)
	}
}

func mustOrder(t *testing.T, q *readmodel.Queries, id uuid.UUID, version int64, status string) {
	t.Helper()
	o, err := q.Order(context.Background(), id, version)
	if err != nil {
		t.Fatalf("Order(%s, min %d): %v", id, version, err)
	}
	if o.Version != version || o.Status != status {
		t.Fatalf("Order(%s, min %d) = version %d, %s; want %d, %s", id, version, o.Version, o.Status, version, status)
	}
}
