package sqlite

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// MarkHandled sets the consumer's feed progress as if it had handled
// every event committed so far: this store's progress is one position, so
// it moves the consumer to the head, past the given aggregates' events and
// any other's (an import marks what it appended to a fresh store, where
// there are no others). It never moves progress back.
func (s *Store) MarkHandled(ctx context.Context, consumer string, _ map[uuid.UUID]int64) error {
	head, err := s.Head(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: mark %s handled: %w", consumer, err)
	}
	pos, err := s.savedProgress(ctx, consumer)
	if err != nil || pos >= head {
		return err
	}
	if err := s.saveProgress(consumer, head); err != nil {
		return fmt.Errorf("sqlite: mark %s handled to %d: %w", consumer, head, err)
	}
	return nil
}
