package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// readError words the read side's refusals of a read of aggType id (see
// readmodel.Queries, the one read-your-writes path): 404 for an id nothing
// of aggType is stored under, 409 version_not_reached for a min_version
// above the stored version. Other errors, nil included, pass unchanged.
func readError(err error, aggType string, id uuid.UUID) error {
	var nr *readmodel.NotReachedError
	switch {
	case errors.Is(err, readmodel.ErrNotFound):
		return notFound(aggType, id)
	case errors.As(err, &nr):
		return &aggregate.Error{Kind: errNotReached, Code: "version_not_reached", Field: "min_version", Detail: nr.Error()}
	}
	return err
}

// stored returns the events of aggregate id, none when it has none or they
// are of another aggregate type (ids are shared by all types).
func (s *Server) stored(ctx context.Context, aggType string, id uuid.UUID) ([]store.Event, error) {
	events, err := s.history.Load(ctx, id, 0)
	if err != nil {
		return nil, err
	}
	if len(events) == 0 || events[0].AggregateType != aggType {
		return nil, nil
	}
	return events, nil
}

func storedVersion(events []store.Event) int64 {
	if len(events) == 0 {
		return 0
	}
	return events[len(events)-1].Sequence
}

type eventJSON struct {
	EventID       uuid.UUID         `json:"event_id"`
	AggregateID   uuid.UUID         `json:"aggregate_id"`
	AggregateType string            `json:"aggregate_type"`
	Sequence      int64             `json:"sequence"`
	EventType     string            `json:"event_type"`
	EventVersion  int               `json:"event_version"`
	Data          json.RawMessage   `json:"data"`
	CausationID   uuid.UUID         `json:"causation_id"`
	CorrelationID uuid.UUID         `json:"correlation_id"`
	Timestamp     time.Time         `json:"timestamp"`
	Metadata      map[string]string `json:"metadata"`
}

// events answers the stored envelopes of one aggregate, straight from the
// event store, upcast to the current schema.
func (s *Server) events(w http.ResponseWriter, r *http.Request, aggType string) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	stored, err := s.stored(r.Context(), aggType, id)
	if err != nil {
		return err
	}
	if len(stored) == 0 {
		return notFound(aggType, id)
	}
	out := make([]eventJSON, len(stored))
	for i, e := range stored {
		out[i] = envelopeOut(e)
	}
	w.Header().Set("ETag", etag(storedVersion(stored)))
	return writeJSON(w, http.StatusOK, map[string]any{"events": out})
}
