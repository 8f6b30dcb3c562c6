package readmodeltest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// CatalogBackend is one backend's catalog as a test gets it.
type CatalogBackend struct {
	// Catalog is a catalog on storage of the test's own: generation 0
	// current, no rebuild begun.
	Catalog readmodel.Catalog
	// Again opens another catalog on the same storage, as another
	// instance, or the same one restarted, would.
	Again func(t *testing.T) readmodel.Catalog
	// TimePrecision is how finely the backend keeps times (see Backend).
	TimePrecision time.Duration
	// Leases are the store's leases, whose fences (store.WithFence) the
	// catalog and the generations it opens honour.
	Leases store.Leases
}

// RunCatalog runs the conformance suite of readmodel.Catalog against
// catalogs returned by open, one per test, each on storage of its own. open
// should close what it opens in t.Cleanup. Tests run in parallel.
func RunCatalog(t *testing.T, open func(t *testing.T) CatalogBackend) {
	tests := []struct {
		name string
		fn   func(*testing.T, CatalogBackend)
	}{
		{"GenerationsAreSeparate", testGenerationsSeparate},
		{"PromoteIsDurableAndShared", testPromote},
		{"Drop", testDrop},
		{"OpenUnlisted", testOpenUnlisted},
		{"PromoteRace", testPromoteRace},
		{"LapsedProjector", testLapsedProjector},
		{"BeginOneAtATime", testBeginOneAtATime},
		{"BeginRace", testBeginRace},
		{"SaveAndCancel", testSaveAndCancel},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), guard)
	t.Cleanup(cancel)
	return ctx
}

func mustCreateGen(t *testing.T, c readmodel.Catalog, gen int64) readmodel.Generation {
	t.Helper()
	g, err := c.Create(ctxOf(t), gen)
	if err != nil {
		t.Fatalf("Create(%d): %v", gen, err)
	}
	return g
}

func mustOpenGen(t *testing.T, c readmodel.Catalog, gen int64) readmodel.Generation {
	t.Helper()
	g, err := c.Open(ctxOf(t), gen)
	if err != nil {
		t.Fatalf("Open(%d): %v", gen, err)
	}
	return g
}

func mustGenerations(t *testing.T, c readmodel.Catalog, want ...int64) {
	t.Helper()
	got, err := c.Generations(ctxOf(t))
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Generations = %v, %v; want %v", got, err, want)
	}
}

func mustCurrent(t *testing.T, c readmodel.Catalog, want int64) {
	t.Helper()
	if got, err := c.Current(ctxOf(t)); err != nil || got != want {
		t.Fatalf("Current = %d, %v; want %d", got, err, want)
	}
}

// testGenerationsSeparate: a new generation starts empty and what is
// applied to one generation is not in another.
func testGenerationsSeparate(t *testing.T, b CatalogBackend) {
	c := b.Catalog
	mustCurrent(t, c, 0)
	g0 := mustOpenGen(t, c, 0)
	l := newLifecycle(t)
	if err := g0.Apply(ctxOf(t), l.events()); err != nil {
		t.Fatalf("Apply to generation 0: %v", err)
	}
	g1 := mustCreateGen(t, c, 1)
	mustGenerations(t, c, 0, 1)
	notFound(t, g1, l.orderA)
	notFound(t, g1, l.custID)

	back := Backend{TimePrecision: b.TimePrecision}
	if err := g1.Apply(ctxOf(t), l.events()); err != nil {
		t.Fatalf("Apply to generation 1: %v", err)
	}
	l.check(t, back, g1)
	l.check(t, back, g0)

	// An order only generation 1 has.
	only := newLifecycle(t)
	if err := g1.Apply(ctxOf(t), only.events()); err != nil {
		t.Fatalf("Apply to generation 1: %v", err)
	}
	notFound(t, g0, only.orderA)
	mustCurrent(t, c, 0)
}

// testPromote: Promote switches Current, for another catalog on the same
// storage too, and the promoted generation keeps its rows.
func testPromote(t *testing.T, b CatalogBackend) {
	c := b.Catalog
	l := newLifecycle(t)
	if err := mustCreateGen(t, c, 1).Apply(ctxOf(t), l.events()); err != nil {
		t.Fatalf("Apply to generation 1: %v", err)
	}
	if err := c.Promote(ctxOf(t), 0, 1); err != nil {
		t.Fatalf("Promote(1): %v", err)
	}
	mustCurrent(t, c, 1)
	other := b.Again(t)
	mustCurrent(t, other, 1)
	l.check(t, Backend{TimePrecision: b.TimePrecision}, mustOpenGen(t, other, 1))
}

// testDrop: the current generation cannot be dropped; another can, and
// takes its rows with it.
func testDrop(t *testing.T, b CatalogBackend) {
	c := b.Catalog
	g1 := mustCreateGen(t, c, 1)
	l := newLifecycle(t)
	if err := g1.Apply(ctxOf(t), l.events()); err != nil {
		t.Fatalf("Apply to generation 1: %v", err)
	}
	if err := c.Drop(ctxOf(t), 0); err == nil {
		t.Fatal("Drop of the current generation succeeded")
	}
	mustGenerations(t, c, 0, 1)
	if err := c.Drop(ctxOf(t), 1); err != nil {
		t.Fatalf("Drop(1): %v", err)
	}
	mustGenerations(t, c, 0)
	if err := c.Drop(ctxOf(t), 1); err != nil {
		t.Fatalf("Drop(1) again: %v, want a no-op", err)
	}
	if err := c.Drop(ctxOf(t), 7); err != nil {
		t.Fatalf("Drop(7) of a generation never opened: %v, want a no-op", err)
	}
	// Created again, it is empty.
	notFound(t, mustCreateGen(t, c, 1), l.orderA)

	// Promote 1, then 0 can go.
	if err := c.Promote(ctxOf(t), 0, 1); err != nil {
		t.Fatalf("Promote(1): %v", err)
	}
	if err := c.Drop(ctxOf(t), 0); err != nil {
		t.Fatalf("Drop(0) once 1 is current: %v", err)
	}
	mustGenerations(t, b.Again(t), 1)
}

func newRebuild(at time.Time) readmodel.Rebuild {
	return readmodel.Rebuild{ID: uuid.Must(uuid.NewV7()), State: readmodel.RebuildPending, RequestedAt: at, UpdatedAt: at}
}

// testBeginOneAtATime: Begin wins until the winner ends, and then again.
func testBeginOneAtATime(t *testing.T, b CatalogBackend) {
	c := b.Catalog
	ctx := ctxOf(t)
	if _, err := c.Last(ctx); !errors.Is(err, readmodel.ErrNotFound) {
		t.Fatalf("Last of a new catalog = %v, want ErrNotFound", err)
	}
	now := time.Now().UTC()
	first := newRebuild(now)
	if got, ok, err := c.Begin(ctx, first); err != nil || !ok || got.ID != first.ID {
		t.Fatalf("Begin(first) = %v, %v, %v; want it begun", got.ID, ok, err)
	}
	second := newRebuild(now.Add(time.Second))
	got, ok, err := b.Again(t).Begin(ctx, second)
	if err != nil || ok || got.ID != first.ID {
		t.Fatalf("Begin(second) while first runs = %v, %v, %v; want refused with first", got.ID, ok, err)
	}
	if _, err := c.Rebuild(ctx, second.ID); !errors.Is(err, readmodel.ErrNotFound) {
		t.Fatalf("a refused rebuild was recorded: %v", err)
	}
	// Progress does not end it.
	first.State, first.StartedAt = readmodel.RebuildReplaying, now
	if err := c.Save(ctx, first); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if _, ok, _ := c.Begin(ctx, second); ok {
		t.Fatal("Begin won while the first rebuild replays")
	}
	first.State, first.EndedAt = readmodel.RebuildDone, now.Add(time.Minute)
	if err := c.Save(ctx, first); err != nil {
		t.Fatalf("Save(done): %v", err)
	}
	if got, ok, err := c.Begin(ctx, second); err != nil || !ok || got.ID != second.ID {
		t.Fatalf("Begin(second) after first ended = %v, %v, %v; want it begun", got.ID, ok, err)
	}
	if last, err := b.Again(t).Last(ctx); err != nil || last.ID != second.ID {
		t.Fatalf("Last = %v, %v; want the second", last.ID, err)
	}
}

// testBeginRace: of rebuilds begun at once from several catalogs, one wins.
func testBeginRace(t *testing.T, b CatalogBackend) {
	const n = 8
	catalogs := []readmodel.Catalog{b.Catalog}
	for len(catalogs) < n {
		catalogs = append(catalogs, b.Again(t))
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins []uuid.UUID
		seen = map[uuid.UUID]bool{}
	)
	now := time.Now().UTC()
	for i, c := range catalogs {
		wg.Go(func() {
			r := newRebuild(now.Add(time.Duration(i) * time.Millisecond))
			got, ok, err := c.Begin(ctxOf(t), r)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("Begin: %v", err)
			case ok:
				wins = append(wins, r.ID)
			default:
				seen[got.ID] = true
			}
		})
	}
	wg.Wait()
	if len(wins) != 1 {
		t.Fatalf("%d rebuilds begun at once, want exactly 1", len(wins))
	}
	for id := range seen {
		if id != wins[0] {
			t.Errorf("a refused Begin was told %s runs, want the winner %s", id, wins[0])
		}
	}
}

// testSaveAndCancel: Save round-trips every field; Cancel sets
// CancelRequested, which Save leaves alone; unknown ids are ErrNotFound.
func testSaveAndCancel(t *testing.T, b CatalogBackend) {
	c := b.Catalog
	ctx := ctxOf(t)
	if _, err := c.Cancel(ctx, uuid.New()); !errors.Is(err, readmodel.ErrNotFound) {
		t.Fatalf("Cancel of an unknown rebuild = %v, want ErrNotFound", err)
	}
	if _, err := c.Rebuild(ctx, uuid.New()); !errors.Is(err, readmodel.ErrNotFound) {
		t.Fatalf("Rebuild of an unknown id = %v, want ErrNotFound", err)
	}
	p := max(b.TimePrecision, time.Nanosecond)
	now := time.Now().UTC().Truncate(p)
	r := newRebuild(now)
	if _, ok, err := c.Begin(ctx, r); !ok || err != nil {
		t.Fatalf("Begin = %v, %v", ok, err)
	}
	r.State, r.Generation, r.From = readmodel.RebuildCatchingUp, 3, 2
	r.EventsDone, r.EventsTotal, r.Runner = 1234, 5678, "instance-a/run-1"
	r.StartedAt, r.UpdatedAt = now.Add(time.Second), now.Add(2*time.Second)
	if err := c.Save(ctx, r); err != nil {
		t.Fatalf("Save: %v", err)
	}
	got, err := b.Again(t).Rebuild(ctx, r.ID)
	if err != nil || got != r {
		t.Fatalf("Rebuild =\n%+v, %v\nwant\n%+v", got, err, r)
	}
	cancelled, err := b.Again(t).Cancel(ctx, r.ID)
	if err != nil || !cancelled.CancelRequested || cancelled.EventsDone != r.EventsDone {
		t.Fatalf("Cancel = %+v, %v; want CancelRequested set", cancelled, err)
	}
	r.EventsDone = 2000 // the runner's next progress step
	if err := c.Save(ctx, r); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if got, err := c.Rebuild(ctx, r.ID); err != nil || !got.CancelRequested || got.EventsDone != 2000 {
		t.Fatalf("after Save, Rebuild = %+v, %v; want CancelRequested kept and the progress saved", got, err)
	}
	r.State, r.Error, r.EndedAt = readmodel.RebuildCancelled, "cancelled by the operator", now.Add(3*time.Second)
	if err := c.Save(ctx, r); err != nil {
		t.Fatalf("Save(cancelled): %v", err)
	}
	r.CancelRequested = true
	if got, err := c.Rebuild(ctx, r.ID); err != nil || got != r {
		t.Fatalf("Rebuild =\n%+v, %v\nwant\n%+v", got, err, r)
	}
	if got, err := c.Cancel(ctx, r.ID); err != nil || got.State != readmodel.RebuildCancelled {
		t.Fatalf("Cancel of an ended rebuild = %+v, %v; want it unchanged", got, err)
	}
}

// testOpenUnlisted: Open never creates a generation: one that was never
// created, or was dropped, is not found, and stays unlisted.
func testOpenUnlisted(t *testing.T, b CatalogBackend) {
	c := b.Catalog
	if _, err := c.Open(ctxOf(t), 5); !errors.Is(err, readmodel.ErrNotFound) {
		t.Errorf("Open(5) of a generation never created = %v, want ErrNotFound", err)
	}
	mustCreateGen(t, c, 1)
	if err := c.Drop(ctxOf(t), 1); err != nil {
		t.Fatalf("Drop(1): %v", err)
	}
	for _, cat := range []readmodel.Catalog{c, b.Again(t)} {
		if _, err := cat.Open(ctxOf(t), 1); !errors.Is(err, readmodel.ErrNotFound) {
			t.Errorf("Open(1) of a dropped generation = %v, want ErrNotFound", err)
		}
	}
	mustGenerations(t, c, 0)
	mustOpenGen(t, c, 0) // the current one is listed
}

// testPromoteRace: two promotes in place of the same generation, from two
// catalogs at once: exactly one wins, the other is told ErrNotCurrent,
// and Current is the winner's.
func testPromoteRace(t *testing.T, b CatalogBackend) {
	c, other := b.Catalog, b.Again(t)
	mustCreateGen(t, c, 1)
	mustCreateGen(t, c, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, cat := range []readmodel.Catalog{c, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = cat.Promote(ctxOf(t), 0, int64(i+1))
		}()
	}
	wg.Wait()
	winner := int64(0)
	for i, err := range errs {
		switch {
		case err == nil && winner == 0:
			winner = int64(i + 1)
		case err == nil:
			t.Fatalf("both promotes in place of generation 0 won")
		case !errors.Is(err, readmodel.ErrNotCurrent):
			t.Fatalf("Promote(0, %d) = %v, want nil or ErrNotCurrent", i+1, err)
		}
	}
	if winner == 0 {
		t.Fatalf("neither promote won: %v", errs)
	}
	mustCurrent(t, c, winner)
	mustCurrent(t, other, winner)
}

// testLapsedProjector: once another instance took the projector's lease,
// the holder before it changes nothing: its batch, Create, Promote and
// Drop are refused with store.ErrFenced and leave nothing behind; the new
// holder's cleanup (a Drop) wins over a promote of the generation it drops.
func testLapsedProjector(t *testing.T, b CatalogBackend) {
	c, ctx := b.Catalog, ctxOf(t)
	const lease = "projector"
	take := func(holder string, want int64) context.Context {
		t.Helper()
		e, err := b.Leases.Acquire(ctx, lease, holder, time.Minute)
		if err != nil || e != want {
			t.Fatalf("Acquire(%s, %s) = epoch %d, %v; want %d", lease, holder, e, err, want)
		}
		return store.WithFence(ctx, store.Fence{Lease: lease, Epoch: e})
	}
	a := take("a", 1)
	g1, err := c.Create(a, 1)
	if err != nil {
		t.Fatalf("Create(1) by the holder: %v", err)
	}
	l := newLifecycle(t)
	if err := g1.Apply(a, l.events()); err != nil {
		t.Fatalf("Apply by the holder: %v", err)
	}
	// a's lease lapses; b takes it and drops what a was building.
	if err := b.Leases.Release(ctx, lease, "a"); err != nil {
		t.Fatal(err)
	}
	bctx := take("b", 2)
	if err := c.Drop(bctx, 1); err != nil {
		t.Fatalf("Drop(1) by the new holder: %v", err)
	}
	if _, err := c.Create(bctx, 2); err != nil {
		t.Fatalf("Create(2) by the new holder: %v", err)
	}

	g0 := mustOpenGen(t, c, 0)
	late := newLifecycle(t)
	for what, err := range map[string]error{
		"Apply":   g0.Apply(a, late.events()),
		"Create":  func() error { _, err := c.Create(a, 3); return err }(),
		"Promote": c.Promote(a, 0, 1),
		"Drop":    c.Drop(a, 2),
	} {
		if !errors.Is(err, store.ErrFenced) {
			t.Errorf("%s by the lapsed holder = %v, want store.ErrFenced", what, err)
		}
	}
	notFound(t, g0, late.orderA)
	notFound(t, g0, late.custID)
	mustCurrent(t, c, 0)
	mustGenerations(t, c, 0, 2)
	if _, err := c.Open(ctx, 1); !errors.Is(err, readmodel.ErrNotFound) {
		t.Errorf("Open(1) after the new holder dropped it = %v, want ErrNotFound", err)
	}

	// The holder's own writes go through.
	if err := g0.Apply(bctx, late.events()); err != nil {
		t.Fatalf("Apply by the new holder: %v", err)
	}
	late.check(t, Backend{TimePrecision: b.TimePrecision}, g0)
}
