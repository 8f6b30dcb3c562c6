package cdc

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/orderd/orderd/internal/store"
)

// fakeRow holds a delta row's values the way scylla-cdc-go represents them:
// nullable scalars as pointers to gocql's types, maps flattened.
type fakeRow struct {
	op   scyllacdc.OperationType
	vals map[string]interface{}
}

func (r fakeRow) GetOperation() scyllacdc.OperationType { return r.op }

func (r fakeRow) GetValue(col string) (interface{}, bool) {
	v, ok := r.vals[col]
	return v, ok
}

func ptr[T any](v T) *T { return &v }

func insertRow(e store.Event) fakeRow {
	id := func(u uuid.UUID) *gocql.UUID { g := gocql.UUID(u); return &g }
	return fakeRow{op: scyllacdc.Insert, vals: map[string]interface{}{
		"aggregate_id": id(e.AggregateID), "sequence": ptr(e.Sequence), "event_id": id(e.ID),
		"aggregate_type": ptr(e.AggregateType), "event_type": ptr(e.Type), "event_version": ptr(e.SchemaVersion),
		"data": ptr(string(e.Data)), "causation_id": id(e.CausationID), "correlation_id": id(e.CorrelationID),
		"timestamp": ptr(e.Timestamp), "metadata": e.Metadata, "version": (*int64)(nil),
	}}
}

func event(agg uuid.UUID, seq int64) store.Event {
	return store.Event{
		ID: uuid.New(), AggregateID: agg, AggregateType: "Order", Sequence: seq, Type: "OrderConfirmed",
		SchemaVersion: 1, Data: []byte(`{"n":1}`), CausationID: uuid.New(), CorrelationID: uuid.New(),
		Timestamp: time.Date(2026, 11, 25, 12, 0, 0, int(seq)*1e6, time.UTC), Metadata: map[string]string{"command": "ConfirmOrder"},
	}
}

// TestEventsOf: an append's delta rows (the static version's UPDATE and
// one INSERT per event, in whatever order the batch sequence numbers put
// them) become its events in sequence order, every envelope field intact.
func TestEventsOf(t *testing.T) {
	agg := uuid.New()
	e3, e4, e5 := event(agg, 3), event(agg, 4), event(agg, 5)
	e4.Metadata = nil
	static := fakeRow{op: scyllacdc.Update, vals: map[string]interface{}{
		"aggregate_id": ptr(gocql.UUID(agg)), "version": ptr(int64(5)), "sequence": (*int64)(nil),
	}}
	got, err := eventsOf([]row{insertRow(e5), static, insertRow(e3), insertRow(e4)})
	if err != nil {
		t.Fatal(err)
	}
	if want := []store.Event{e3, e4, e5}; !reflect.DeepEqual(got, want) {
		t.Fatalf("eventsOf =\n%+v\nwant\n%+v", got, want)
	}
}

func TestEventsOfSkipsRowsWithoutEvents(t *testing.T) {
	agg := uuid.New()
	staticInsert := fakeRow{op: scyllacdc.Insert, vals: map[string]interface{}{"version": ptr(int64(1)), "sequence": (*int64)(nil)}}
	deleted := insertRow(event(agg, 1))
	deleted.op = scyllacdc.RowDelete
	got, err := eventsOf([]row{staticInsert, deleted})
	if err != nil || len(got) != 0 {
		t.Fatalf("eventsOf = %+v, %v; want nothing", got, err)
	}
}

func TestEventsOfRefusesIncompleteRows(t *testing.T) {
	r := insertRow(event(uuid.New(), 1))
	r.vals["data"] = (*string)(nil)
	delete(r.vals, "event_type")
	_, err := eventsOf([]row{r})
	if err == nil || !strings.Contains(err.Error(), "data") || !strings.Contains(err.Error(), "event_type") {
		t.Fatalf("eventsOf of a row without data and type: %v", err)
	}
}
