package api

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
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
