package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

func mustOpen(t testing.TB, path string, opts ...sqlite.ViewsOption) *sqlite.Views {
	t.Helper()
	v, err := sqlite.OpenViews(path, zap.NewNop(), opts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// TestViewsConformance runs the read-model suite on a views file in a temporary
// directory; the second instance is another Views on the same file, as a
// second process would open it.
func TestViewsConformance(t *testing.T) {
	readmodeltest.Run(t, func(t *testing.T) readmodeltest.Backend {
		path := filepath.Join(t.TempDir(), "views.db")
		return readmodeltest.Backend{
			Views:  mustOpen(t, path),
			Second: func(t *testing.T) readmodeltest.Views { return mustOpen(t, path) },
		}
	})
}

// TestViewsConformanceRowCache runs the suite on a Views that keeps rows in
// memory, as orderd's does; a small cache, so that rows are also evicted.
// It is the file's only writer, so the tests of a second instance skip.
func TestViewsConformanceRowCache(t *testing.T) {
	readmodeltest.Run(t, func(t *testing.T) readmodeltest.Backend {
		return readmodeltest.Backend{Views: mustOpen(t, filepath.Join(t.TempDir(), "views.db"), sqlite.WithRowCache(8))}
	})
}

// TestRowCacheRedeliveryOfEvictedRow: a batch delivered again that starts
// an order the cache no longer holds folds an older row than the file has;
// the upsert keeps the file's, and the cache must not take the older one.
func TestRowCacheRedeliveryOfEvictedRow(t *testing.T) {
	v := mustOpen(t, filepath.Join(t.TempDir(), "views.db"), sqlite.WithRowCache(1))
	ctx := context.Background()
	// 0 registers the customer; 1, 3, 6 are order 1's #1..#3; 2 and 5 order
	// 2's #1, #2; 4 is order 3's #1.
	events := readmodeltest.Pipeline(t, 7)
	if err := v.Apply(ctx, events); err != nil {
		t.Fatal(err)
	}
	order1, order2 := events[1].AggregateID, events[2].AggregateID
	if o, err := v.Order(ctx, order1); err != nil || o.Version != 3 {
		t.Fatalf("order 1: version %d, %v; want 3", o.Version, err)
	}
	if _, err := v.Order(ctx, order2); err != nil { // takes the cache's one place
		t.Fatal(err)
	}
	if err := v.Apply(ctx, []store.Event{events[1], events[3]}); err != nil { // order 1's #1, #2 again
		t.Fatal(err)
	}
	if o, err := v.Order(ctx, order1); err != nil || o.Version != 3 {
		t.Fatalf("order 1 after its first events came again: version %d, %v; want 3", o.Version, err)
	}
}
