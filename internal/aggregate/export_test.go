package aggregate

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// The tests of this package run the handler on the real embedded stores,
// whose package they cannot import: internal/sqlite imports readmodel,
// which imports this package. sqlite_test.go, in package aggregate_test,
// which may import it, sets these before any test runs.
var (
	// OpenSQLiteStore opens the embedded event store on a file of t's own,
	// closed when t ends.
	OpenSQLiteStore func(t testing.TB) EventStore
	// OpenSQLiteSnapshots opens the embedded snapshot store on a file of
	// t's own, closed when t ends.
	OpenSQLiteSnapshots func(t testing.TB) store.Snapshots
	// OpenSQLiteClaims opens the embedded store of e-mail claims on an
	// event store of its own (a file of t's), closed when t ends.
	OpenSQLiteClaims func(t testing.TB) store.EmailClaims
)

// EventStore is the embedded event store as the tests use it: the port,
// and Head, the position of its last event.
type EventStore interface {
	store.Store
	Head(ctx context.Context) (int64, error)
}

// testClaims holds the e-mail claims of each event store of the tests, so
// that the handlers of one store share its claims (store.Store → its
// store.EmailClaims).
var testClaims sync.Map

// newTestHandler is NewHandler with the e-mail claims of st.
func newTestHandler(t testing.TB, st store.Store, now func() time.Time, opts ...Option) *Handler {
	t.Helper()
	claims, ok := testClaims.Load(st)
	if !ok {
		claims, _ = testClaims.LoadOrStore(st, OpenSQLiteClaims(t))
		t.Cleanup(func() { testClaims.Delete(st) })
	}
	return NewHandler(st, now, append([]Option{WithEmailClaims(claims.(store.EmailClaims))}, opts...)...)
}

// AppendClaimStream appends to st the claim stream under id that a build
// before claim rows wrote when customer, at version 0, claimed the address
// whose key is key (in plaintext, as the oldest builds did).
func AppendClaimStream(t testing.TB, st store.Store, id uuid.UUID, key string, customer uuid.UUID) {
	t.Helper()
	now := time.Now().UTC()
	envs, err := NewHandler(nil, time.Now).envelopes(EmailClaimType, id, 0,
		[]Event{EmailClaimed{Email: key, CustomerID: customer, ClaimedAt: now}}, Meta{CommandID: uuid.New()}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Append(context.Background(), id, 0, envs); err != nil {
		t.Fatal(err)
	}
}
