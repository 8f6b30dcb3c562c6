package sqlite

import (
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
)

func TestRebuild(t *testing.T) {
	readmodeltest.RunRebuild(t, func(t *testing.T) readmodeltest.RebuildBackend {
		dir := t.TempDir()
		events, err := OpenStore(filepath.Join(dir, "events.db"), Options{Upcaster: aggregate.Upcasters()})
		if err != nil {
			t.Fatalf("open the event store: %v", err)
		}
		t.Cleanup(func() { _ = events.Close() })
		// As orderd opens it: with rows kept in memory, which a rebuild's
		// switch of generations must not leave stale.
		catalog, err := OpenCatalog(t.Context(), dir, zap.NewNop(), WithRowCache(256))
		if err != nil {
			t.Fatalf("OpenCatalog: %v", err)
		}
		t.Cleanup(func() { _ = catalog.Close() })
		return readmodeltest.RebuildBackend{Store: events, Catalog: catalog, Events: 3000}
	})
}
