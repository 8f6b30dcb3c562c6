package aggregate_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// init hands the package's own tests the embedded stores (see
// export_test.go).
func init() {
	aggregate.OpenSQLiteStore = func(t testing.TB) aggregate.EventStore {
		t.Helper()
		st, err := sqlite.OpenStore(filepath.Join(t.TempDir(), "events.db"), sqlite.Options{Upcaster: aggregate.Upcasters()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	aggregate.OpenSQLiteSnapshots = func(t testing.TB) store.Snapshots {
		t.Helper()
		s, err := sqlite.OpenSnapshots(context.Background(), filepath.Join(t.TempDir(), "snapshots.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	aggregate.OpenSQLiteClaims = func(t testing.TB) store.EmailClaims {
		t.Helper()
		st, err := sqlite.OpenStore(filepath.Join(t.TempDir(), "events.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st.EmailClaims()
	}
}
