// Package storetest is the conformance suite of store.Store. Every backend
// runs it from its own tests:
//
//	storetest.Run(t, func(t *testing.T, up store.Upcaster) store.Store {
//		return mustOpen(t, filepath.Join(t.TempDir(), "events.db"), up)
//	}, storetest.Capabilities{Positions: true})
//
// The store must implement store.Store, store.Feed, store.Log and
// store.Leases.
//
// The suite knows no domain type: it stores opaque JSON payloads of a
// made-up aggregate type, "Widget".
//
// What the suite holds a backend to, beyond the doc comments of store.Store:
//   - Timestamps come back in UTC, equal to what was appended at least to the
//     millisecond (Cassandra keeps milliseconds; SQLite keeps nanoseconds).
//   - Metadata comes back equal, except that an empty map may come back nil.
//   - Data comes back JSON-equal (not necessarily byte-equal).
//   - Close wakes a ReadFeed that is blocked, which then returns
//     store.ErrClosed, and a second Close returns store.ErrClosed.
//   - A backend without a global commit order (Capabilities.Positions
//     false) hands events with no Position.
package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// Opener returns a new, empty store that reads through up (nil: no
// upcasting). It should close the store in t.Cleanup; the suite may close it
// earlier, so a Close error of store.ErrClosed there is expected.
type Opener func(t *testing.T, up store.Upcaster) store.Store

// Reopener returns a new, empty store and a function that opens the same
// data again, as a restarted process would. The suite closes the first store
// before it calls reopen, and may call reopen more than once, closing each
// store first.
type Reopener func(t *testing.T) (s store.Store, reopen func() store.Store)

// guard bounds every wait in the suite. It only turns a hang into a failure;
// no assertion depends on timing.
const guard = 30 * time.Second

// Capabilities say what a backend offers beyond Append and Load, so that
// the suite checks what it has and skips, saying so, what it has not.
type Capabilities struct {
	// Positions: the backend has a global commit order. Its events carry
	// positions, and it has ReadFeed and Head (see Positioned), which the
	// suite checks too. Without it positions must be zero.
	Positions bool

	// Blind, when set, returns a store on the same data as s whose appends
	// the backend's fast path does not see (on Cassandra: appends that
	// write no hint), so that the suite can check that the slow path
	// alone delivers them.
	Blind func(t *testing.T, s store.Store) store.Store
}

// Positioned is what a backend with Capabilities.Positions offers beyond
// the ports: its feed read by position.
type Positioned interface {
	// ReadFeed returns up to limit committed events whose position is
	// greater than after, in position order, upcast. When there are none
	// it waits until a commit adds some or ctx ends (then ctx.Err()).
	ReadFeed(ctx context.Context, after int64, limit int) ([]store.Event, error)
	// Head returns the newest committed position, 0 when the store is
	// empty.
	Head(ctx context.Context) (int64, error)
}

func positioned(t *testing.T, s store.Store) Positioned {
	t.Helper()
	p, ok := s.(Positioned)
	if !ok {
		t.Fatalf("%T has Capabilities.Positions but no ReadFeed and Head", s)
	}
	return p
}

// as returns s as the port T (store.Feed, store.Leases, store.Log), or
// fails t when s does not implement it.
func as[T any](t *testing.T, s store.Store) T {
	t.Helper()
	v, ok := s.(T)
	if !ok {
		t.Fatalf("%T does not implement %v", s, reflect.TypeFor[T]())
	}
	return v
}

// backend is the store under test: how to open one and what it offers.
type backend struct {
	open Opener
	caps Capabilities
}

// Run runs the conformance suite against stores returned by open, with the
// capabilities caps. Subtests run in parallel, each on its own store.
func Run(t *testing.T, open Opener, caps Capabilities) {
	b := backend{open, caps}
	tests := []struct {
		name  string
		fn    func(*testing.T, backend)
		needs string // "positions": runs only with Capabilities.Positions; "blind": only with Blind
	}{
		{"RoundTrip", testRoundTrip, ""},
		{"TraceContext", testTraceContext, ""},
		{"LoadAfter", testLoadAfter, ""},
		{"LoadPage", testLoadPage, ""},
		{"LoadPageUpcast", testLoadPageUpcast, ""},
		{"InvalidAppend", testInvalidAppend, ""},
		{"Conflict", testConflict, ""},
		{"SameVersionRace", testSameVersionRace, ""},
		{"Mint", testMint, ""},
		{"ConcurrentWritersOneAggregate", testConcurrentWriters, ""},
		{"Version", testVersion, ""},
		{"VersionConcurrent", testVersionConcurrent, ""},
		{"PositionsAreCommitOrder", testFeedOrder, "positions"},
		{"PositionsResume", testFeedResume, "positions"},
		{"ReadFeedBlocksAndWakes", testFeedWakes, "positions"},
		{"ReadFeedCancel", testFeedCancel, "positions"},
		{"SubscribeComplete", testSubscribeComplete, ""},
		{"SubscribeResume", testSubscribeResume, ""},
		{"SubscribeConsumersIndependent", testSubscribeIndependent, ""},
		{"SubscribeHandlerError", testSubscribeHandlerError, ""},
		{"SubscribeUpcast", testSubscribeUpcast, ""},
		{"SubscribeLag", testSubscribeLag, ""},
		{"SubscribeBlind", testSubscribeBlind, "blind"},
		{"SubscribeFenced", testSubscribeFenced, ""},
		{"ReplayWhole", testReplayWhole, ""},
		{"ReplayMark", testReplayMark, ""},
		{"ReplayHandlerError", testReplayHandlerError, ""},
		{"ReplayCancel", testReplayCancel, ""},
		{"Leases", testLeases, ""},
		{"LeaseExpiry", testLeaseExpiry, ""},
		{"Upcast", testUpcast, ""},
		{"Close", testClose, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.needs == "positions" && !caps.Positions:
				t.Skip("the backend has no global commit order (Capabilities.Positions is false)")
			case tc.needs == "blind" && caps.Blind == nil:
				t.Skip("the backend has no fast path that can miss an event (Capabilities.Blind is nil)")
			}
			t.Parallel()
			tc.fn(t, b)
		})
	}
}

// Base timestamp of the suite's events: nanoseconds set, so that a backend
// that keeps them is seen to, and one that keeps milliseconds still passes.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

// widgets returns n events for aggregate id at sequences from+1…, built as a
// writer would build them. The first event of an aggregate is a WidgetMade.
func widgets(id uuid.UUID, from int64, n int) []store.Event {
	evs := make([]store.Event, n)
	correlation := uuid.New()
	for i := range evs {
		seq := from + int64(i) + 1
		typ := "WidgetTurned"
		if seq == 1 {
			typ = "WidgetMade"
		}
		evs[i] = store.Event{
			ID:            uuid.Must(uuid.NewV7()),
			AggregateID:   id,
			AggregateType: "Widget",
			Sequence:      seq,
			Type:          typ,
			SchemaVersion: 1,
			Data:          json.RawMessage(fmt.Sprintf(`{"seq": %d, "name": "wïdget \"%d\""}`, seq, seq)),
			CausationID:   uuid.New(),
			CorrelationID: correlation,
			Timestamp:     t0.Add(time.Duration(seq) * time.Second),
			Metadata:      map[string]string{"actor": "storetest", "seq": fmt.Sprint(seq)},
		}
	}
	return evs
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), guard)
	t.Cleanup(cancel)
	return ctx
}

func mustAppend(t *testing.T, s store.Store, id uuid.UUID, expected int64, evs []store.Event) {
	t.Helper()
	if err := s.Append(testContext(t), id, expected, evs); err != nil {
		t.Fatalf("Append(%s, %d, %d events): %v", id, expected, len(evs), err)
	}
}

func mustLoad(t *testing.T, s store.Store, id uuid.UUID, after int64) []store.Event {
	t.Helper()
	evs, err := s.Load(testContext(t), id, after)
	if err != nil {
		t.Fatalf("Load(%s, %d): %v", id, after, err)
	}
	return evs
}

func mustHead(t *testing.T, s store.Store) int64 {
	t.Helper()
	h, err := positioned(t, s).Head(testContext(t))
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return h
}

// readFeedTo reads the feed after position after up to and including head,
// in pages of limit, checking that positions strictly increase.
func readFeedTo(t *testing.T, s store.Store, after, head int64, limit int) []store.Event {
	t.Helper()
	var all []store.Event
	for after < head {
		evs, err := positioned(t, s).ReadFeed(testContext(t), after, limit)
		if err != nil {
			t.Fatalf("ReadFeed(%d, %d): %v", after, limit, err)
		}
		if len(evs) > limit {
			t.Fatalf("ReadFeed(%d, %d) returned %d events", after, limit, len(evs))
		}
		for _, e := range evs {
			if e.Position <= after {
				t.Fatalf("ReadFeed: position %d after %d", e.Position, after)
			}
			after = e.Position
		}
		all = append(all, evs...)
	}
	return all
}

// checkEvents fails unless got matches want field by field, within the
// guarantees listed in the package comment, and every event has a position
// if the backend has a global order, and none if it has not.
func (b backend) checkEvents(t *testing.T, got, want []store.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range want {
		diff := eventDiff(got[i], want[i])
		switch {
		case diff != "":
		case b.caps.Positions && got[i].Position <= 0:
			diff = fmt.Sprintf("Position %d, want > 0", got[i].Position)
		case !b.caps.Positions && got[i].Position != 0:
			diff = fmt.Sprintf("Position %d from a backend without positions, want 0", got[i].Position)
		}
		if diff != "" {
			t.Errorf("event %d (seq %d): %s", i, want[i].Sequence, diff)
		}
	}
}

// eventDiff compares everything but the position. Timestamps are compared
// at the millisecond, the precision CQL keeps: both are truncated, so that
// a backend that truncates passes and one that rounds up does not.
func eventDiff(g, w store.Event) string {
	switch {
	case g.ID != w.ID:
		return fmt.Sprintf("ID %s, want %s", g.ID, w.ID)
	case g.AggregateID != w.AggregateID || g.AggregateType != w.AggregateType:
		return fmt.Sprintf("aggregate %s %s, want %s %s", g.AggregateType, g.AggregateID, w.AggregateType, w.AggregateID)
	case g.Sequence != w.Sequence:
		return fmt.Sprintf("Sequence %d, want %d", g.Sequence, w.Sequence)
	case g.Type != w.Type || g.SchemaVersion != w.SchemaVersion:
		return fmt.Sprintf("type %s v%d, want %s v%d", g.Type, g.SchemaVersion, w.Type, w.SchemaVersion)
	case !jsonEqual(g.Data, w.Data):
		return fmt.Sprintf("Data %s, want %s", g.Data, w.Data)
	case g.CausationID != w.CausationID || g.CorrelationID != w.CorrelationID:
		return fmt.Sprintf("causation/correlation %s/%s, want %s/%s", g.CausationID, g.CorrelationID, w.CausationID, w.CorrelationID)
	case g.Timestamp.Location() != time.UTC:
		return fmt.Sprintf("Timestamp %v is not in UTC", g.Timestamp)
	case !g.Timestamp.Truncate(time.Millisecond).Equal(w.Timestamp.Truncate(time.Millisecond)):
		return fmt.Sprintf("Timestamp %v, want %v", g.Timestamp, w.Timestamp)
	case !(len(g.Metadata) == 0 && len(w.Metadata) == 0) && !maps.Equal(g.Metadata, w.Metadata):
		return fmt.Sprintf("Metadata %v, want %v", g.Metadata, w.Metadata)
	}
	return ""
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
