package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// atLeast reads an aggregate's view with read-your-writes: with min 0 once,
// answering 404 when there is no row; with a min_version, it reads once
// too, and only when the row is missing or older than min does it ask the
// event store what is stored. Nothing of aggType: 404 at once. A version
// below min: 409 version_not_reached at once, since waiting cannot help.
// Otherwise the projection is truly behind and is waited for (503
// projection_behind when it does not get there in time).
func atLeast[T any](ctx context.Context, s *Server, aggType string, id uuid.UUID, min int64,
	read func(context.Context, uuid.UUID, int64) (T, error), version func(T) int64,
) (T, error) {
	row, err := read(ctx, id, 0)
	switch {
	case err == nil && version(row) >= min:
		return row, nil
	case err != nil && !errors.Is(err, readmodel.ErrNotFound):
		return row, err
	case min == 0:
		return row, notFound(aggType, id)
	}
	stored, err := s.stored(ctx, aggType, id)
	if err != nil {
		return row, err
	}
	switch v := storedVersion(stored); {
	case len(stored) == 0:
		return row, notFound(aggType, id)
	case v < min:
		return row, &problem{kind: errNotReached, code: "version_not_reached", field: "min_version",
			detail: fmt.Sprintf("%s %s is at version %d; version %d does not exist yet", strings.ToLower(aggType), id, v, min)}
	}
	return read(ctx, id, min)
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
