package cdc

import (
	"fmt"
	"sort"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	scyllacdc "github.com/scylladb/scylla-cdc-go"

	"github.com/orderd/orderd/internal/store"
)

// row is the part of a CDC log row that events are read from.
// *scyllacdc.ChangeRow has it; since the library offers no way to build
// one, this seam is what lets the row handling be tested with plain values.
type row interface {
	GetOperation() scyllacdc.OperationType
	GetValue(column string) (interface{}, bool)
}

// eventsOf returns the events that a change's delta rows append, sorted by
// sequence. An append is one batch: the static version's UPDATE, which has
// no sequence, and one INSERT per event. The CDC batch sequence number
// (cdc$batch_seq_no) follows the statement order Scylla chose, not the
// events', so the rows are sorted by the events' own sequence.
func eventsOf(rows []row) ([]store.Event, error) {
	var out []store.Event
	for _, r := range rows {
		if r.GetOperation() != scyllacdc.Insert {
			continue
		}
		seq, ok := int64Of(r, "sequence")
		if !ok {
			continue // the static version's row
		}
		e, err := eventOf(r, seq)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sequence < out[j].Sequence })
	return out, nil
}

func eventOf(r row, seq int64) (store.Event, error) {
	e := store.Event{Sequence: seq}
	var missing []string
	need := func(name string, ok bool) {
		if !ok {
			missing = append(missing, name)
		}
	}
	var ok bool
	e.AggregateID, ok = uuidOf(r, "aggregate_id")
	need("aggregate_id", ok)
	e.ID, ok = uuidOf(r, "event_id")
	need("event_id", ok)
	e.AggregateType, ok = stringOf(r, "aggregate_type")
	need("aggregate_type", ok)
	e.Type, ok = stringOf(r, "event_type")
	need("event_type", ok)
	var version int
	version, ok = intOf(r, "event_version")
	e.SchemaVersion = version
	need("event_version", ok)
	var data string
	data, ok = stringOf(r, "data")
	e.Data = []byte(data)
	need("data", ok)
	e.CausationID, _ = uuidOf(r, "causation_id")
	e.CorrelationID, _ = uuidOf(r, "correlation_id")
	e.Timestamp, ok = timeOf(r, "timestamp")
	need("timestamp", ok)
	if v, found := r.GetValue("metadata"); found {
		if m, isMap := v.(map[string]string); isMap && len(m) > 0 {
			e.Metadata = m
		}
	}
	if len(missing) > 0 {
		return e, fmt.Errorf("cdc: insert of sequence %d lacks %v", seq, missing)
	}
	return e, nil
}

// The library represents a nullable scalar as a pointer to gocql's type.

func int64Of(r row, col string) (int64, bool) {
	v, _ := r.GetValue(col)
	p, ok := v.(*int64)
	if !ok || p == nil {
		return 0, false
	}
	return *p, true
}

func intOf(r row, col string) (int, bool) {
	v, _ := r.GetValue(col)
	p, ok := v.(*int)
	if !ok || p == nil {
		return 0, false
	}
	return *p, true
}

func stringOf(r row, col string) (string, bool) {
	v, _ := r.GetValue(col)
	p, ok := v.(*string)
	if !ok || p == nil {
		return "", false
	}
	return *p, true
}

func uuidOf(r row, col string) (uuid.UUID, bool) {
	v, _ := r.GetValue(col)
	p, ok := v.(*gocql.UUID)
	if !ok || p == nil {
		return uuid.Nil, false
	}
	return uuid.UUID(*p), true
}

func timeOf(r row, col string) (time.Time, bool) {
	v, _ := r.GetValue(col)
	p, ok := v.(*time.Time)
	if !ok || p == nil {
		return time.Time{}, false
	}
	return p.UTC(), true
}
