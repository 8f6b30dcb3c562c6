package sqlite_test

import (
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
	"github.com/orderd/orderd/internal/readmodel/sqlite"
)

func mustOpen(t testing.TB, path string) *sqlite.Views {
	t.Helper()
	v, err := sqlite.Open(path, zap.NewNop())
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// TestConformance runs the read-model suite on a views file in a temporary
// directory; the second instance is another Views on the same file, as a
// second process would open it.
func TestConformance(t *testing.T) {
	readmodeltest.Run(t, func(t *testing.T) readmodeltest.Backend {
		path := filepath.Join(t.TempDir(), "views.db")
		return readmodeltest.Backend{
			Views:  mustOpen(t, path),
			Second: func(t *testing.T) readmodeltest.Views { return mustOpen(t, path) },
		}
	})
}
