package cql

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
	"github.com/orderd/orderd/internal/store"
)

// BenchmarkRebuild measures a whole blue/green rebuild on Cassandra, from
// the request to the switch: replaying 20,000 events of order lifecycles
// into a new generation, then replaying
// them again as the catch-up (this backend has no global order, so the
// catch-up is a second full scan whose rows are mostly written already),
// and promoting. It reports the events applied per second, both passes
// counted, and the time per rebuild: rows=lwt with every row a lightweight
// transaction, as before issue 17, beside rows=stamped, plain writes
// stamped with their versions.
func BenchmarkRebuild(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	byAgg := map[uuid.UUID][]store.Event{}
	var ids []uuid.UUID
	for _, ev := range readmodeltest.Pipeline(b, 20_000) {
		if _, ok := byAgg[ev.AggregateID]; !ok {
			ids = append(ids, ev.AggregateID)
		}
		byAgg[ev.AggregateID] = append(byAgg[ev.AggregateID], ev)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for _, id := range ids {
		g.Go(func() error { return e.store.Append(gctx, id, 0, byAgg[id]) })
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	for _, mode := range []struct {
		name string
		opts []ViewsOption
	}{{"lwt", []ViewsOption{conditionalRowsOption}}, {"stamped", nil}} {
		b.Run("rows="+mode.name, func(b *testing.B) { benchmarkRebuild(b, e, mode.opts...) })
	}
}

// conditionalRowsOption makes every row write of the Views a catalog opens a
// lightweight transaction, as before issue 17: the rows=lwt side of the
// benchmarks.
func conditionalRowsOption(v *Views) { v.conditionalRows = true }

// benchmarkRebuild runs rebuilds of e's log with a catalog whose Views take
// opts, from the generation that is current.
func benchmarkRebuild(b *testing.B, e *env, opts ...ViewsOption) {
	ctx := context.Background()
	catalog := NewCatalog(e.session(b), e.ks, zap.NewNop(), opts...)
	cur, err := catalog.Current(ctx)
	if err != nil {
		b.Fatal(err)
	}
	gen, err := catalog.Open(ctx, cur)
	if err != nil {
		b.Fatal(err)
	}
	live := readmodel.NewLive(cur, gen, e.store, zap.NewNop())
	rb := readmodel.NewRebuilder(catalog, e.store, live,
		readmodel.RebuildOptions{Poll: 10 * time.Millisecond, Grace: time.Millisecond}, zap.NewNop())
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = rb.Serve(sctx, "bench")
	}()
	defer func() { stop(); <-served }()

	var done int64
	for b.Loop() {
		r, err := rb.Request(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for !r.State.Ended() {
			time.Sleep(10 * time.Millisecond)
			if r, err = rb.Rebuild(ctx, r.ID); err != nil {
				b.Fatal(err)
			}
		}
		if r.State != readmodel.RebuildDone {
			b.Fatalf("rebuild %s: %s", r.State, r.Error)
		}
		done += r.EventsDone
	}
	b.ReportMetric(float64(done)/b.Elapsed().Seconds(), "events/s")
}
