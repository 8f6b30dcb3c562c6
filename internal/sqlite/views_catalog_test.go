package sqlite

import (
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
)

func TestCatalogConformance(t *testing.T) {
	readmodeltest.RunCatalog(t, func(t *testing.T) readmodeltest.CatalogBackend {
		dir := t.TempDir()
		st, err := OpenStore(filepath.Join(dir, "events.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		open := func(t *testing.T) readmodel.Catalog {
			c, err := OpenCatalog(t.Context(), dir, zap.NewNop(), FencedBy(st))
			if err != nil {
				t.Fatalf("OpenCatalog: %v", err)
			}
			t.Cleanup(func() { _ = c.Close() })
			return c
		}
		return readmodeltest.CatalogBackend{Catalog: open(t), Again: open, Leases: st}
	})
}
