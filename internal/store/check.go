package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// The times every backend can store: a nanosecond count in an int64 covers
// the years 1678 to 2262.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// CheckAppend checks an append as the Store contract requires (events for
// aggregateID with the sequences expected+1, expected+2, …, each complete,
// its data valid JSON and its text valid UTF-8), so that every backend
// refuses the same programming errors with the same words. The errors are
// not ErrConflict.
func CheckAppend(aggregateID uuid.UUID, expected int64, events []Event) error {
	switch {
	case len(events) == 0:
		return errors.New("no events")
	case aggregateID == uuid.Nil:
		return errors.New("nil aggregate id")
	case expected < 0:
		return fmt.Errorf("negative expected version %d", expected)
	}
	for i, e := range events {
		if err := checkEvent(aggregateID, expected+int64(i)+1, e); err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
	}
	return nil
}

func checkEvent(id uuid.UUID, seq int64, e Event) error {
	switch {
	case e.AggregateID != id:
		return fmt.Errorf("aggregate id %s, want %s", e.AggregateID, id)
	case e.Sequence != seq:
		return fmt.Errorf("sequence %d, want %d", e.Sequence, seq)
	case e.ID == uuid.Nil:
		return errors.New("nil event id")
	case e.AggregateType == "" || e.Type == "":
		return errors.New("empty aggregate or event type")
	case e.SchemaVersion < 1 || e.SchemaVersion > math.MaxInt32:
		return fmt.Errorf("schema version %d, want 1 to %d", e.SchemaVersion, math.MaxInt32)
	case !json.Valid(e.Data):
		return errors.New("data is not valid JSON")
	case !utf8.Valid(e.Data) || !utf8.ValidString(e.AggregateType) || !utf8.ValidString(e.Type):
		return errors.New("data or type is not valid UTF-8")
	case e.Timestamp.Before(minTime) || e.Timestamp.After(maxTime):
		return fmt.Errorf("timestamp %v outside the years 1678–2262", e.Timestamp)
	}
	for k, v := range e.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("metadata %q is not valid UTF-8", k)
		}
	}
	return nil
}
