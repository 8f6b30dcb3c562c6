package sqlite

import (
	"testing"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
)

func TestCatalogConformance(t *testing.T) {
	readmodeltest.RunCatalog(t, func(t *testing.T) readmodeltest.CatalogBackend {
		dir := t.TempDir()
		open := func(t *testing.T) readmodel.Catalog {
			c, err := OpenCatalog(t.Context(), dir, zap.NewNop())
			if err != nil {
				t.Fatalf("OpenCatalog: %v", err)
			}
			t.Cleanup(func() { _ = c.Close() })
			return c
		}
		return readmodeltest.CatalogBackend{Catalog: open(t), Again: open}
	})
}
