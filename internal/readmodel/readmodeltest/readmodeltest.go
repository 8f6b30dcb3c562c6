// Package readmodeltest is the conformance suite of the read-model
// backends: every backend runs it from its own tests, on its real storage.
//
//	readmodeltest.Run(t, func(t *testing.T) readmodeltest.Backend {
//		path := filepath.Join(t.TempDir(), "views.db")
//		return readmodeltest.Backend{
//			Views:  mustOpen(t, path),
//			Second: func(t *testing.T) readmodeltest.Views { return mustOpen(t, path) },
//		}
//	})
//
// What the suite holds a backend to, beyond the doc comments of
// readmodel.Views and of the backends' Apply:
//   - Apply is a store.Handler. Events of aggregate types without views are
//     skipped without being decoded. An event at or below its row's version
//     changes nothing, so redelivered batches and single events leave rows
//     and versions as they were. An event that skips past its row's
//     version+1 returns an error wrapping readmodel.ErrGap and leaves that
//     row as it was; so does an event that does not decode.
//   - When Apply returns nil, every row is at least at its events' versions,
//     and the Changed channel taken before the call is closed if the batch
//     held an event of a projected type (applied now or before, by this
//     Views or another). A batch of unprojected events only closes nothing.
//   - Two or more Views on one storage (orderd instances) may apply the
//     same events at once, in different batches, out of step with each
//     other, each redelivering batches the others have long passed: no row
//     (nor an order in a customer's list) ever goes back, and all end with
//     the rows the events fold to.
//   - Times come back in UTC, equal to the events' to Backend.TimePrecision.
//
// Events are made by running commands through the real aggregate package
// (aggregate.Handler), so their envelopes and payloads are those orderd
// writes. Every test makes ids of its own, so backends may share storage
// between tests.
package readmodeltest

import (
	"context"
	"testing"
	"time"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// guard bounds every wait in the suite. It only turns a hang into a failure;
// no assertion depends on timing.
const guard = 30 * time.Second

// Views is what a backend offers: the rows queries read, and Apply, the
// store.Handler the projector's feed calls.
type Views interface {
	readmodel.Views
	Apply(ctx context.Context, events []store.Event) error
}

// Backend is one backend's read models as a test gets them.
type Backend struct {
	// Views is a new Views for the test. Its storage need not be empty (the
	// suite's ids are the test's own), but nothing else may write the
	// suite's rows.
	Views Views

	// Second, when not nil, opens another Views on the storage of Views, as
	// a second orderd process would (its own connections and its own
	// Changed). The tests that need two instances skip without it.
	Second func(t *testing.T) Views

	// TimePrecision is how finely the backend keeps times: the rows' times
	// are compared with the events' truncated to it. Zero means exactly
	// (nanoseconds).
	TimePrecision time.Duration
}

// Run runs the conformance suite against backends returned by open, one per
// test. open should close what it opens in t.Cleanup. Tests run in
// parallel.
func Run(t *testing.T, open func(t *testing.T) Backend) {
	tests := []struct {
		name string
		fn   func(*testing.T, Backend)
	}{
		{"Lifecycle", testLifecycle},
		{"Redelivery", testRedelivery},
		{"OverlappingBatches", testOverlappingBatches},
		{"UnknownAggregateTypes", testUnknownAggregateTypes},
		{"Gap", testGap},
		{"UndecodableEvent", testUndecodableEvent},
		{"CustomerOrdersPages", testCustomerOrdersPages},
		{"ChangedAfterApply", testChangedAfterApply},
		{"SecondInstance", testSecondInstance},
		{"ConcurrentInstances", testConcurrentInstances},
		{"InstancesOutOfStep", testInstancesOutOfStep},
		{"QueriesWaitForVersion", testQueriesWaitForVersion},
		{"QueriesBehind", testQueriesBehind},
		{"QueriesAnswerAtOnce", testQueriesAnswerAtOnce},
		{"QueriesWaitForUnknownRow", testQueriesWaitForUnknownRow},
		{"QueriesSeeOtherInstance", testQueriesSeeOtherInstance},
		{"QueriesTooManyWaiters", testQueriesTooManyWaiters},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// second returns b's second Views on the same storage, or skips t.
func (b Backend) second(t *testing.T) Views {
	t.Helper()
	if b.Second == nil {
		t.Skip("the backend offers no second Views on the same storage")
	}
	return b.Second(t)
}

// order returns o as the backend keeps it: times to its precision.
func (b Backend) order(o readmodel.Order) readmodel.Order {
	o.CreatedAt, o.UpdatedAt = b.time(o.CreatedAt), b.time(o.UpdatedAt)
	return o
}

// customer returns c as the backend keeps it.
func (b Backend) customer(c readmodel.Customer) readmodel.Customer {
	c.RegisteredAt, c.UpdatedAt = b.time(c.RegisteredAt), b.time(c.UpdatedAt)
	return c
}

func (b Backend) time(t time.Time) time.Time {
	if b.TimePrecision > 0 {
		t = t.Truncate(b.TimePrecision)
	}
	return t.UTC()
}

// apply applies each batch with v, failing t on an error.
func apply(t *testing.T, v Views, batches ...[]store.Event) {
	t.Helper()
	for i, batch := range batches {
		if err := v.Apply(context.Background(), batch); err != nil {
			t.Fatalf("Apply batch %d of %d (%d events): %v", i+1, len(batches), len(batch), err)
		}
	}
}
