package readmodeltest

import (
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// EventStore is what a rebuild runs on: the event store, its feed and its
// whole log.
type EventStore interface {
	store.Store
	store.Feed
	store.Log
}

// RebuildBackend is one backend's store and catalog as a rebuild test gets
// them.
type RebuildBackend struct {
	// Store is an empty event store of the test's own.
	Store EventStore
	// Catalog is the read models' catalog on storage of the test's own:
	// generation 0 current and empty, no rebuild begun.
	Catalog readmodel.Catalog
	// TimePrecision is how finely the backend keeps times (see Backend).
	TimePrecision time.Duration
	// Events is how many events of history the rebuild under load starts
	// from (before the load's): as many as the backend appends in a few
	// seconds.
	Events int
}

// RunRebuild runs the suite of blue/green rebuilds (readmodel.Rebuilder,
// readmodel.Live) against a backend's real store and catalog.
func RunRebuild(t *testing.T, open func(t *testing.T) RebuildBackend) {
	tests := []struct {
		name string
		fn   func(*testing.T, RebuildBackend)
	}{
		{"UnderLoad", testRebuildUnderLoad},
		{"OneAtATime", testRebuildOneAtATime},
		{"Cancel", testRebuildCancel},
		{"Interrupted", testRebuildInterrupted},
		{"SplitProjector", testRebuildSplitProjector},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// node is one orderd's read side over a backend: the live read models, the
// rebuilder, and the projector (the feed subscription and the rebuilder's
// Serve) until stop.
type node struct {
	live *readmodel.Live
	rb   *readmodel.Rebuilder
	stop func()
}

// openLive returns the read side of an instance on the catalog's current
// generation.
func openLive(ctx context.Context, t *testing.T, b RebuildBackend, log *zap.Logger) *readmodel.Live {
	t.Helper()
	cur, err := b.Catalog.Current(ctx)
	if err != nil {
		t.Fatalf("Current: %v", err)
	}
	g, err := b.Catalog.Open(ctx, cur)
	if err != nil {
		t.Fatalf("Open(%d): %v", cur, err)
	}
	return readmodel.NewLive(cur, g, b.Store, log)
}

func startNode(t *testing.T, b RebuildBackend, log *zap.Logger) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	live := openLive(ctx, t, b, log)
	n := &node{live: live}
	n.rb = readmodel.NewRebuilder(b.Catalog, b.Store, n.live,
		readmodel.RebuildOptions{Poll: 20 * time.Millisecond, Progress: 50 * time.Millisecond, Grace: 100 * time.Millisecond}, log)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := b.Store.Subscribe(ctx, "projector", n.live.Apply); err != nil {
			t.Errorf("projector: %v", err)
		}
	})
	wg.Go(func() {
		if err := n.rb.Serve(ctx, "node-"+uuid.NewString()); err != nil {
			t.Errorf("rebuilder: %v", err)
		}
	})
	n.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(n.stop)
	return n
}

// testRebuildSplitProjector: a rebuild while the projector is split over
// two instances (each projects half of the aggregates, as shards do), the
// rebuild running on one of them, ends with the read models a projection
// from scratch gives: the other instance writes the new generation during
// the catch-up too (Live.Track follows the rebuild), so no batch it
// applies in between is missing from it.
func testRebuildSplitProjector(t *testing.T, b RebuildBackend) {
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	appendEach(t, b.Store, Pipeline(t, b.Events))
	even := func(id uuid.UUID) bool { return id[15]%2 == 0 }
	odd := func(id uuid.UUID) bool { return !even(id) }
	a := startSplitNode(t, b, log, "projector-even", even, true)
	other := startSplitNode(t, b, log, "projector-odd", odd, false)

	load, stopLoad := context.WithCancel(t.Context())
	defer stopLoad()
	var wg sync.WaitGroup
	for range 2 {
		events := Pipeline(t, 20000)
		wg.Go(func() { writer(load, t, b.Store, events, nil) })
	}
	time.Sleep(200 * time.Millisecond)
	r, err := a.rb.Request(ctxOf(t))
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	done := waitEnded(t, b.Catalog, r.ID)
	time.Sleep(200 * time.Millisecond)
	stopLoad()
	wg.Wait()
	if done.State != readmodel.RebuildDone {
		t.Fatalf("rebuild ended %s: %s", done.State, done.Error)
	}
	waitCaughtUp(t, b.Store, "projector-even")
	waitCaughtUp(t, b.Store, "projector-odd")
	deadline := time.Now().Add(guard)
	for other.live.Current() != done.Generation {
		if time.Now().After(deadline) {
			t.Fatalf("the other instance reads generation %d, want %d", other.live.Current(), done.Generation)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx := ctxOf(t)
	orders, customers := foldStore(ctx, t, b.Store)
	back := Backend{TimePrecision: b.TimePrecision}
	wrong := 0
	for id, want := range orders {
		got, err := a.live.Order(ctx, id)
		if err != nil || !reflect.DeepEqual(got, back.order(want)) {
			if wrong++; wrong <= 3 {
				t.Errorf("order %s (projected by the %s instance) after the rebuild =\n%+v, %v\nwant\n%+v",
					id, map[bool]string{true: "rebuilding", false: "other"}[even(id)], got, err, back.order(want))
			}
		}
	}
	for id, want := range customers {
		got, err := a.live.Customer(ctx, id)
		if err != nil || !reflect.DeepEqual(got, back.customer(want)) {
			if wrong++; wrong <= 3 {
				t.Errorf("customer %s after the rebuild =\n%+v, %v\nwant\n%+v", id, got, err, back.customer(want))
			}
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of %d rows differ from the projection from scratch", wrong, len(orders)+len(customers))
	}
	t.Logf("%d orders and %d customers equal to the projection from scratch, over two instances", len(orders), len(customers))
}

// startSplitNode starts an instance's read side that projects only the
// aggregates keep selects, under consumer, follows the catalog
// (Live.Track) as an instance on shared storage does, and runs the
// rebuilder when rebuild is set.
func startSplitNode(t *testing.T, b RebuildBackend, log *zap.Logger, consumer string, keep func(uuid.UUID) bool, rebuild bool) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	live := openLive(ctx, t, b, log)
	const trackEvery = 50 * time.Millisecond
	n := &node{live: live}
	n.rb = readmodel.NewRebuilder(b.Catalog, b.Store, n.live, readmodel.RebuildOptions{Poll: 20 * time.Millisecond,
		Progress: 50 * time.Millisecond, Grace: 100 * time.Millisecond, FollowWait: 6 * trackEvery}, log)
	var wg sync.WaitGroup
	wg.Go(func() {
		err := b.Store.Subscribe(ctx, consumer, func(ctx context.Context, events []store.Event) error {
			var mine []store.Event
			for _, e := range events {
				if keep(e.AggregateID) {
					mine = append(mine, e)
				}
			}
			if len(mine) == 0 {
				return nil
			}
			return n.live.Apply(ctx, mine)
		})
		if err != nil {
			t.Errorf("%s: %v", consumer, err)
		}
	})
	wg.Go(func() { n.live.Track(ctx, b.Catalog, trackEvery) })
	if rebuild {
		wg.Go(func() {
			if err := n.rb.Serve(ctx, "node-"+uuid.NewString()); err != nil {
				t.Errorf("rebuilder: %v", err)
			}
		})
	}
	n.stop = func() { cancel(); wg.Wait() }
	t.Cleanup(n.stop)
	return n
}

// waitEnded waits until rebuild id ends and returns it.
func waitEnded(t *testing.T, c readmodel.Catalog, id uuid.UUID) readmodel.Rebuild {
	t.Helper()
	deadline := time.Now().Add(2 * guard)
	for time.Now().Before(deadline) {
		r, err := c.Rebuild(ctxOf(t), id)
		if err != nil {
			t.Fatalf("Rebuild(%s): %v", id, err)
		}
		if r.State.Ended() {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("rebuild %s did not end within %s", id, 2*guard)
	return readmodel.Rebuild{}
}

// appendEach appends events to s one at a time, in order, as commands
// would have.
func appendEach(t *testing.T, s store.Store, events []store.Event) {
	t.Helper()
	for _, e := range events {
		if err := s.Append(ctxOf(t), e.AggregateID, e.Sequence-1, []store.Event{e}); err != nil {
			t.Fatalf("append %s #%d: %v", e.AggregateID, e.Sequence, err)
		}
	}
}

// writer appends a pipeline of order lifecycles to s, event by event, as
// commands would, until ctx ends or the pipeline is used up, and offers
// each order it creates on created (dropping it when nobody takes it).
func writer(ctx context.Context, t *testing.T, s store.Store, events []store.Event, created chan<- uuid.UUID) {
	for _, e := range events {
		if ctx.Err() != nil {
			return
		}
		if err := s.Append(ctx, e.AggregateID, e.Sequence-1, []store.Event{e}); err != nil {
			if ctx.Err() == nil {
				t.Errorf("append %s #%d: %v", e.AggregateID, e.Sequence, err)
			}
			return
		}
		if e.Sequence == 1 && e.AggregateType == aggregate.OrderType {
			select {
			case created <- e.AggregateID:
			default:
			}
		}
	}
}

// testRebuildUnderLoad: a rebuild while events keep arriving and reads keep
// coming ends with the read models a projection from scratch gives; no
// read fails or sees a row go back meanwhile.
func testRebuildUnderLoad(t *testing.T, b RebuildBackend) {
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	// History before the rebuild, projected by generation 0.
	appendEach(t, b.Store, Pipeline(t, b.Events))
	n := startNode(t, b, log)

	// The load lasts until the rebuild has ended (each step below has a
	// guard of its own): a deadline shared with the set-up above could run
	// out on a loaded machine before the rebuild is even requested.
	load, stopLoad := context.WithCancel(t.Context())
	defer stopLoad()
	created := make(chan uuid.UUID, 1024)
	var wg sync.WaitGroup
	for range 2 {
		events := Pipeline(t, 20000)
		wg.Go(func() { writer(load, t, b.Store, events, created) })
	}
	// Readers: every order read must be there once seen, and never older.
	var (
		reads  atomic.Int64
		seenMu sync.Mutex
		seen   = map[uuid.UUID]int64{}
		ids    []uuid.UUID
	)
	for r := range 4 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(r), 7))
			for load.Err() == nil {
				select {
				case id := <-created:
					seenMu.Lock()
					ids = append(ids, id)
					seenMu.Unlock()
				default:
				}
				seenMu.Lock()
				if len(ids) == 0 {
					seenMu.Unlock()
					time.Sleep(time.Millisecond)
					continue
				}
				id := ids[rnd.IntN(len(ids))]
				before := seen[id]
				seenMu.Unlock()
				o, err := n.live.Order(context.Background(), id)
				reads.Add(1)
				switch {
				case errors.Is(err, readmodel.ErrNotFound) && before == 0:
					continue // not projected yet
				case err != nil:
					t.Errorf("read of order %s during the rebuild: %v", id, err)
					return
				case o.Version < before:
					t.Errorf("order %s went back from version %d to %d during the rebuild", id, before, o.Version)
					return
				}
				seenMu.Lock()
				seen[id] = max(seen[id], o.Version)
				seenMu.Unlock()
			}
		})
	}

	time.Sleep(200 * time.Millisecond) // load running before the rebuild
	r, err := n.rb.Request(ctxOf(t))
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	done := waitEnded(t, b.Catalog, r.ID)
	time.Sleep(200 * time.Millisecond) // load running after the switch
	stopLoad()
	wg.Wait()
	if done.State != readmodel.RebuildDone {
		t.Fatalf("rebuild ended %s: %s", done.State, done.Error)
	}
	if done.Generation != 1 || done.From != 0 || done.EventsDone < int64(b.Events) {
		t.Errorf("rebuild = %+v; want generation 1 from 0, at least the %d events before it", done, b.Events)
	}
	if got := n.live.Current(); got != 1 {
		t.Errorf("live reads generation %d, want 1", got)
	}
	if reads.Load() == 0 {
		t.Fatal("no read ran during the rebuild")
	}
	t.Logf("%d reads during the rebuild of %d events", reads.Load(), done.EventsDone)

	// The old generation goes after the grace.
	ctx := ctxOf(t)
	deadline := time.Now().Add(guard)
	for {
		gens, err := b.Catalog.Generations(ctx)
		if err != nil {
			t.Fatalf("Generations: %v", err)
		}
		if slices.Equal(gens, []int64{1}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Generations = %v after the rebuild, want [1]", gens)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Once the projector has caught up, the rows are the projection from
	// scratch of every event in the store.
	waitCaughtUp(t, b.Store, "projector")
	orders, customers := foldStore(ctx, t, b.Store)
	back := Backend{TimePrecision: b.TimePrecision}
	for id, want := range orders {
		got, err := n.live.Order(ctx, id)
		if err != nil || !reflect.DeepEqual(got, back.order(want)) {
			t.Fatalf("order %s after the rebuild =\n%+v, %v\nwant\n%+v", id, got, err, back.order(want))
		}
	}
	for id, want := range customers {
		got, err := n.live.Customer(ctx, id)
		if err != nil || !reflect.DeepEqual(got, back.customer(want)) {
			t.Fatalf("customer %s after the rebuild =\n%+v, %v\nwant\n%+v", id, got, err, back.customer(want))
		}
	}
	t.Logf("%d orders and %d customers equal to the projection from scratch", len(orders), len(customers))
}

// waitCaughtUp waits until the consumer has handled every committed event.
func waitCaughtUp(t *testing.T, f store.Feed, consumer string) {
	t.Helper()
	deadline := time.Now().Add(2 * guard)
	for time.Now().Before(deadline) {
		l, err := f.Lag(ctxOf(t), consumer)
		if err != nil {
			t.Fatalf("Lag: %v", err)
		}
		if l.Known && l.Events == 0 && time.Since(l.At) < time.Second {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not catch up within %s", consumer, 2*guard)
}

// testRebuildOneAtATime: a second rebuild is refused while one has not
// ended, naming the first.
func testRebuildOneAtATime(t *testing.T, b RebuildBackend) {
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	live := readmodel.NewLive(0, mustOpenGen(t, b.Catalog, 0), b.Store, log)
	rb := readmodel.NewRebuilder(b.Catalog, b.Store, live, readmodel.RebuildOptions{}, log)
	ctx := ctxOf(t)
	first, err := rb.Request(ctx)
	if err != nil || first.State != readmodel.RebuildPending {
		t.Fatalf("Request = %+v, %v; want a pending rebuild", first, err)
	}
	second, err := rb.Request(ctx)
	if !errors.Is(err, readmodel.ErrRebuildRunning) || second.ID != first.ID {
		t.Fatalf("second Request = %v, %v; want ErrRebuildRunning naming %s", second.ID, err, first.ID)
	}
}

// testRebuildCancel: a cancelled rebuild ends cancelled, drops what it
// built, and leaves the current generation serving.
func testRebuildCancel(t *testing.T, b RebuildBackend) {
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	ctx := ctxOf(t)
	l := newLifecycle(t)
	appendEach(t, b.Store, l.events())
	live := readmodel.NewLive(0, mustOpenGen(t, b.Catalog, 0), b.Store, log)
	rb := readmodel.NewRebuilder(b.Catalog, b.Store, live, readmodel.RebuildOptions{Poll: 20 * time.Millisecond}, log)
	r, err := rb.Request(ctx)
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if c, err := rb.Cancel(ctx, r.ID); err != nil || !c.CancelRequested {
		t.Fatalf("Cancel = %+v, %v", c, err)
	}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = rb.Serve(sctx, "node") })
	got := waitEnded(t, b.Catalog, r.ID)
	stop()
	wg.Wait()
	if got.State != readmodel.RebuildCancelled || got.Error == "" {
		t.Fatalf("rebuild = %+v; want cancelled, saying why", got)
	}
	mustCurrent(t, b.Catalog, 0)
	mustGenerations(t, b.Catalog, 0)
	if live.Current() != 0 {
		t.Fatalf("live reads generation %d, want 0", live.Current())
	}
}

// testRebuildInterrupted: what a rebuild interrupted by a crash left (its
// record, its half-built generation) is cleaned up by the next projector,
// and a new rebuild then works.
func testRebuildInterrupted(t *testing.T, b RebuildBackend) {
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	ctx := ctxOf(t)
	l := newLifecycle(t)
	appendEach(t, b.Store, l.events())
	// The crashed run: generation 0 projected, generation 1 half built.
	if err := mustOpenGen(t, b.Catalog, 0).Apply(ctx, l.events()); err != nil {
		t.Fatalf("Apply to generation 0: %v", err)
	}
	if err := mustCreateGen(t, b.Catalog, 1).Apply(ctx, l.events()[:3]); err != nil {
		t.Fatalf("Apply to generation 1: %v", err)
	}
	now := time.Now().UTC()
	crashed := readmodel.Rebuild{ID: uuid.Must(uuid.NewV7()), State: readmodel.RebuildPending, RequestedAt: now, UpdatedAt: now}
	if _, ok, err := b.Catalog.Begin(ctx, crashed); !ok || err != nil {
		t.Fatalf("Begin = %v, %v", ok, err)
	}
	crashed.State, crashed.Generation, crashed.Runner, crashed.StartedAt = readmodel.RebuildReplaying, 1, "dead-node", now
	if err := b.Catalog.Save(ctx, crashed); err != nil {
		t.Fatalf("Save: %v", err)
	}

	n := startNode(t, b, log)
	got := waitEnded(t, b.Catalog, crashed.ID)
	if got.State != readmodel.RebuildFailed || got.Error == "" {
		t.Fatalf("interrupted rebuild = %+v; want failed, saying why", got)
	}
	l.check(t, Backend{TimePrecision: b.TimePrecision}, n.live)

	r, err := n.rb.Request(ctx)
	if err != nil {
		t.Fatalf("Request after the interrupted one: %v", err)
	}
	if done := waitEnded(t, b.Catalog, r.ID); done.State != readmodel.RebuildDone {
		t.Fatalf("rebuild after the interrupted one ended %s: %s", done.State, done.Error)
	}
	l.check(t, Backend{TimePrecision: b.TimePrecision}, n.live)
	if n.live.Current() != 1 {
		t.Fatalf("live reads generation %d, want 1 (the crashed one's number, free again)", n.live.Current())
	}
}
