package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"

	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// rebuildEvents is the size of the log BenchmarkRebuild rebuilds from.
const rebuildEvents = 200_000

// BenchmarkRebuild measures a whole blue/green rebuild on SQLite, from the
// request to the switch (no grace): replaying 200,000 events of order
// lifecycles into a new generation, catching up, promoting. It reports
// events/s; the target is 150,000 on two cores.
func BenchmarkRebuild(b *testing.B) {
	dir := b.TempDir()
	events, err := sqlite.OpenStore(filepath.Join(dir, "events.db"), sqlite.Options{Upcaster: aggregate.Upcasters()})
	if err != nil {
		b.Fatal(err)
	}
	defer events.Close()
	ctx := context.Background()
	// One Append per aggregate: filling the log is not what is measured.
	byAgg := map[uuid.UUID][]store.Event{}
	var order []uuid.UUID
	for _, e := range readmodeltest.Pipeline(b, rebuildEvents) {
		if _, ok := byAgg[e.AggregateID]; !ok {
			order = append(order, e.AggregateID)
		}
		byAgg[e.AggregateID] = append(byAgg[e.AggregateID], e)
	}
	for _, id := range order {
		if err := events.Append(ctx, id, 0, byAgg[id]); err != nil {
			b.Fatal(err)
		}
	}
	catalog, err := sqlite.OpenCatalog(ctx, dir, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer catalog.Close()
	g, err := catalog.Open(ctx, 0)
	if err != nil {
		b.Fatal(err)
	}
	live := readmodel.NewLive(0, g, events, zap.NewNop())
	rb := readmodel.NewRebuilder(catalog, events, live,
		readmodel.RebuildOptions{Poll: time.Millisecond, Grace: time.Millisecond}, zap.NewNop())
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = rb.Serve(sctx, "bench") }()

	b.ResetTimer()
	var done int64
	for b.Loop() {
		r, err := rb.Request(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if r, err = rb.Rebuild(ctx, r.ID); err != nil {
				b.Fatal(err)
			}
			if r.State.Ended() {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if r.State != readmodel.RebuildDone {
			b.Fatalf("rebuild %s: %s", r.State, r.Error)
		}
		done += r.EventsDone
	}
	b.ReportMetric(float64(done)/b.Elapsed().Seconds(), "events/s")
}
