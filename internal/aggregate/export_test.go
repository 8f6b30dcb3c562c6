package aggregate

import (
	"context"
	"testing"

	"github.com/orderd/orderd/internal/store"
)

// The tests of this package run the handler on the real embedded stores,
// whose package they cannot import: internal/sqlite imports readmodel,
// which imports this package. sqlite_test.go, in package aggregate_test,
// which may import it, sets these two before any test runs.
var (
	// OpenSQLiteStore opens the embedded event store on a file of t's own,
	// closed when t ends.
	OpenSQLiteStore func(t testing.TB) EventStore
	// OpenSQLiteSnapshots opens the embedded snapshot store on a file of
	// t's own, closed when t ends.
	OpenSQLiteSnapshots func(t testing.TB) store.Snapshots
)

// EventStore is the embedded event store as the tests use it: the port,
// and Head, the position of its last event.
type EventStore interface {
	store.Store
	Head(ctx context.Context) (int64, error)
}
