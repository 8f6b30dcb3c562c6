package aggregate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// openSnapshots is the real embedded snapshot store on a file of the
// test's own (see export_test.go).
func openSnapshots(t testing.TB) store.Snapshots {
	t.Helper()
	return OpenSQLiteSnapshots(t)
}

// lifecycleCommand is one random command of the order life cycle.
type lifecycleCommand func(o *Order, now time.Time) ([]Event, error)

func randomOrderCommand(r *rand.Rand) lifecycleCommand {
	switch r.IntN(8) {
	case 0, 1, 2: // edits are what make long histories
		items := []Item{{ProductID: uuid.New(), Quantity: 1 + r.IntN(5)}}
		return func(o *Order, now time.Time) ([]Event, error) { return o.UpdateItems(items, now) }
	case 3:
		return func(o *Order, now time.Time) ([]Event, error) { return o.Confirm(now) }
	case 4:
		return func(o *Order, now time.Time) ([]Event, error) { return o.Ship("T-1", "DHL", now) }
	case 5:
		return func(o *Order, now time.Time) ([]Event, error) { return o.Deliver("Ann", now) }
	case 6:
		return func(o *Order, now time.Time) ([]Event, error) { return o.Cancel("changed my mind", now) }
	default: // a no-op or a refusal: nothing appended
		return func(o *Order, now time.Time) ([]Event, error) { return o.Confirm(now) }
	}
}

// TestSnapshotEqualsReplay is the property test: over random command
// sequences, with a snapshot every 3 events, the order loaded from the
// state the last command left in memory, and the order loaded from its
// newest stored snapshot, each plus the tail, equal the order replayed
// from all its events, after every command, in every status of the life
// cycle; so does the customer its orders belong to.
func TestSnapshotEqualsReplay(t *testing.T) {
	ctx := context.Background()
	st, snaps := openStore(t), openSnapshots(t)
	h := newTestHandler(t, st, time.Now, WithSnapshots(snaps, 3))
	h.snaps.recentMin = 1 // every command's state kept in memory
	cust := uuid.New()
	registerCustomer(t, h, cust)
	seen := map[Status]bool{}
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 1))
		id := uuid.New()
		if _, err := h.CreateOrder(ctx, id, Meta{Expected: AnyVersion}, cust, []Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
			t.Fatal(err)
		}
		for step := range 5 + r.IntN(25) {
			_, _ = h.Order(ctx, id, Meta{Expected: AnyVersion}, randomOrderCommand(r)) // refusals are part of the walk
			h.snaps.wg.Wait()
			full, _, err := load[Order](ctx, st, OrderType, id)
			if err != nil {
				t.Fatal(err)
			}
			// From the state in memory, and, in a handler with nothing in
			// memory, from the store's newest snapshot.
			for name, hh := range map[string]*Handler{"memory": h, "store": newTestHandler(t, st, time.Now, WithSnapshots(snaps, 3))} {
				cached, v, _, err := loadCached[Order](ctx, hh, OrderType, id)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(cached, full) || v != full.Version {
					t.Fatalf("seed %d step %d: from a snapshot (%s) %+v (version %d), replayed %+v", seed, step, name, cached, v, full)
				}
			}
			seen[full.Status] = true
		}
	}
	for _, s := range []Status{Created, Confirmed, Shipped, Delivered, Cancelled} {
		if !seen[s] {
			t.Errorf("no sequence reached %s", s)
		}
	}
	stats := h.SnapshotStats()
	if stats.Saved == 0 || stats.Recent == 0 || stats.Failed != 0 || stats.Ignored != 0 {
		t.Errorf("stats = %+v; want snapshots saved, loads from memory, and none failed or ignored", stats)
	}
	// The customer, through the other aggregate type that snapshots.
	for range 7 {
		if _, err := h.Customer(ctx, cust, Meta{Expected: AnyVersion}, func(c *Customer, now time.Time) ([]Event, error) {
			return c.ChangePhone(fmt.Sprintf("+4420794600%02d", rand.IntN(100)), now)
		}); err != nil {
			t.Fatal(err)
		}
	}
	h.snaps.wg.Wait()
	full, _, _ := load[Customer](ctx, st, CustomerType, cust)
	if snap, ok, _ := snaps.Latest(ctx, cust, 1<<62); !ok || snap.AggregateType != CustomerType {
		t.Errorf("no customer snapshot: %+v, %v", snap, ok)
	}
	if cached, _, _, err := loadCached[Customer](ctx, h, CustomerType, cust); err != nil || !reflect.DeepEqual(cached, full) {
		t.Errorf("customer from a snapshot %+v, %v; replayed %+v", cached, err, full)
	}
}

// TestSnapshotIgnored: a snapshot of another state version, one that does
// not decode, or one of another aggregate type is ignored (and counted),
// and the aggregate replayed from its events.
func TestSnapshotIgnored(t *testing.T) {
	ctx := context.Background()
	st, snaps := openStore(t), openSnapshots(t)
	writer := newTestHandler(t, st, time.Now, WithSnapshots(snaps, 1000))
	cust, id := uuid.New(), uuid.New()
	registerCustomer(t, writer, cust)
	if _, err := writer.CreateOrder(ctx, id, Meta{Expected: AnyVersion}, cust, []Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
		t.Fatal(err)
	}
	// A handler with nothing in memory (another process, or this one
	// restarted) reads the store's snapshots.
	h := newTestHandler(t, st, time.Now, WithSnapshots(snaps, 1000))
	full, _, _ := load[Order](ctx, st, OrderType, id)
	lie := *full
	lie.Status = Delivered
	state, _ := lie.encodeState()
	for i, snap := range []store.Snapshot{
		{StateVersion: orderStateVersion - 1, State: state, AggregateType: OrderType},
		{StateVersion: orderStateVersion + 1, State: state, AggregateType: OrderType},
		{StateVersion: orderStateVersion, State: []byte(`{"Status": 7}`), AggregateType: OrderType},
		{StateVersion: orderStateVersion, State: []byte(`{"Shiny": true}`), AggregateType: OrderType},
		{StateVersion: customerStateVersion, State: []byte(`{}`), AggregateType: CustomerType},
	} {
		snap.AggregateID, snap.Version, snap.TakenAt = id, int64(i+1), time.Now()
		if err := snaps.Save(ctx, snap); err != nil {
			t.Fatal(err)
		}
		got, _, _, err := loadCached[Order](ctx, h, OrderType, id)
		if err != nil || !reflect.DeepEqual(got, full) {
			t.Errorf("with snapshot %d: %+v, %v; want the replay %+v", i, got, err, full)
		}
		if n := h.SnapshotStats().Ignored; n != uint64(i+1) {
			t.Errorf("with snapshot %d: %d ignored, want %d", i, n, i+1)
		}
	}
}

// TestSnapshotsDeleted: snapshots are a cache. A handler whose snapshots
// are all gone (an empty store) answers every load and command as the one
// that has them, and as one without snapshots.
func TestSnapshotsDeleted(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	with := newTestHandler(t, st, time.Now, WithSnapshots(openSnapshots(t), 2))
	cust := uuid.New()
	registerCustomer(t, with, cust)
	var ids []uuid.UUID
	for seed := range uint64(10) {
		r := rand.New(rand.NewPCG(seed, 2))
		id := uuid.New()
		ids = append(ids, id)
		if _, err := with.CreateOrder(ctx, id, Meta{Expected: AnyVersion}, cust, []Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
			t.Fatal(err)
		}
		for range 15 {
			_, _ = with.Order(ctx, id, Meta{Expected: AnyVersion}, randomOrderCommand(r))
		}
	}
	with.snaps.wg.Wait()
	handlers := map[string]*Handler{
		"deleted": newTestHandler(t, st, time.Now, WithSnapshots(openSnapshots(t), 2)),
		"off":     newTestHandler(t, st, time.Now),
	}
	for _, id := range ids {
		want, wv, _, err := loadCached[Order](ctx, with, OrderType, id)
		if err != nil {
			t.Fatal(err)
		}
		for name, h := range handlers {
			got, v, _, err := loadCached[Order](ctx, h, OrderType, id)
			if err != nil || v != wv || !reflect.DeepEqual(got, want) {
				t.Errorf("%s: %+v at %d, %v; want %+v at %d", name, got, v, err, want, wv)
			}
		}
		// The same command, at the same version, gets the same answer.
		cancel := func(o *Order, now time.Time) ([]Event, error) { return o.Cancel("x", now) }
		_, wantErr := handlers["off"].Order(ctx, id, Meta{Expected: wv + 1}, cancel) // stale on purpose: no append
		_, gotErr := handlers["deleted"].Order(ctx, id, Meta{Expected: wv + 1}, cancel)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Errorf("a command answers %v without snapshots, %v with them deleted", wantErr, gotErr)
		}
	}
}

// TestSnapshotStateFields fails when Order's or Customer's fields change,
// to say: bump the state version, or old snapshots decode into the new
// shape with the new fields zero. Then update the fields listed here.
func TestSnapshotStateFields(t *testing.T) {
	for _, tc := range []struct {
		v       any
		version int
		fields  string
	}{
		{Order{}, orderStateVersion, "ID uuid.UUID, CustomerID uuid.UUID, Items []aggregate.Item, Status aggregate.Status, " +
			"TrackingNumber string, Carrier string, CancelledReason string, Signature string, Version int64, " +
			"CreatedAt time.Time, UpdatedAt time.Time"},
		{Customer{}, customerStateVersion, "ID uuid.UUID, Email string, FirstName string, LastName string, " +
			"Phone string, Erased bool, Version int64, RegisteredAt time.Time, UpdatedAt time.Time"},
	} {
		typ := reflect.TypeOf(tc.v)
		var fields []string
		for f := range typ.Fields() {
			fields = append(fields, f.Name+" "+f.Type.String())
		}
		if got := strings.Join(fields, ", "); got != tc.fields {
			t.Errorf("%s at state version %d has the fields\n\t%s\nnot\n\t%s\nbump its state version and update this test",
				typ.Name(), tc.version, got, tc.fields)
		}
	}
}

// TestRecentStatesTwoWriters: the state a command left in memory is older
// than the events once another process (here another handler on the same
// store) appends; the next load replays what it missed.
func TestRecentStatesTwoWriters(t *testing.T) {
	ctx := context.Background()
	st, snaps := openStore(t), openSnapshots(t)
	a := newTestHandler(t, st, time.Now, WithSnapshots(snaps, 100))
	b := newTestHandler(t, st, time.Now, WithSnapshots(snaps, 100))
	a.snaps.recentMin, b.snaps.recentMin = 1, 1
	cust, id := uuid.New(), uuid.New()
	registerCustomer(t, a, cust)
	if _, err := a.CreateOrder(ctx, id, Meta{Expected: AnyVersion}, cust, []Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 7))
	for step := range 30 {
		h := []*Handler{a, b}[r.IntN(2)]
		items := []Item{{ProductID: uuid.New(), Quantity: 1 + step}}
		if _, err := h.Order(ctx, id, Meta{Expected: AnyVersion}, func(o *Order, now time.Time) ([]Event, error) { return o.UpdateItems(items, now) }); err != nil {
			t.Fatal(err)
		}
		full, _, err := load[Order](ctx, st, OrderType, id)
		if err != nil {
			t.Fatal(err)
		}
		for name, h := range map[string]*Handler{"a": a, "b": b} {
			got, v, _, err := loadCached[Order](ctx, h, OrderType, id)
			if err != nil || v != full.Version || !reflect.DeepEqual(got, full) {
				t.Fatalf("step %d, handler %s: %+v at %d, %v; want %+v", step, name, got, v, err, full)
			}
		}
	}
	if a.SnapshotStats().Recent == 0 || b.SnapshotStats().Recent == 0 {
		t.Fatalf("loads from memory: %d and %d; the test did not exercise them", a.SnapshotStats().Recent, b.SnapshotStats().Recent)
	}
}

// TestRecentStatesOnlyWhenWorthIt: a command that handled fewer than
// recentMin events since its load's start (a create, a command on a short
// history) keeps nothing in memory; one that replayed more does.
func TestRecentStatesOnlyWhenWorthIt(t *testing.T) {
	ctx := context.Background()
	st, snaps := openStore(t), openSnapshots(t)
	h := newTestHandler(t, st, time.Now, WithSnapshots(snaps, 1000))
	cust, id := uuid.New(), uuid.New()
	registerCustomer(t, h, cust)
	if _, err := h.CreateOrder(ctx, id, Meta{Expected: AnyVersion}, cust, []Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
		t.Fatal(err)
	}
	update := func(o *Order, now time.Time) ([]Event, error) {
		return o.UpdateItems([]Item{{ProductID: uuid.New(), Quantity: 2}}, now)
	}
	// Command k replays the k events before it: the first recentMin-2
	// handle fewer than recentMin with their own, and keep nothing; the
	// next handles recentMin and keeps its state.
	for range recentMin - 1 {
		if _, err := h.Order(ctx, id, Meta{Expected: AnyVersion}, update); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.SnapshotStats().Recent; n != 0 {
		t.Fatalf("%d loads from memory before any state was worth keeping", n)
	}
	if _, err := h.Order(ctx, id, Meta{Expected: AnyVersion}, update); err != nil {
		t.Fatal(err)
	}
	if n := h.SnapshotStats().Recent; n != 1 {
		t.Fatalf("%d loads from memory after a state was kept, want 1", n)
	}
}

// TestRecentStatesBounded: the states in memory never exceed maxRecent.
func TestRecentStatesBounded(t *testing.T) {
	var r recentStates
	for range maxRecent + 50 {
		r.put(uuid.New(), recentState{aggType: OrderType, version: 1, stateVersion: orderStateVersion, state: []byte(`{}`)})
	}
	if n := len(r.states); n != maxRecent {
		t.Fatalf("%d states in memory, want %d", n, maxRecent)
	}
}
