package relay

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Message is one event as it is published.
type Message struct {
	Topic   string
	Key     []byte // the aggregate id: Kafka keeps one key's records in order
	Value   []byte // the event's data, JSON
	Headers []Header
	Time    time.Time
}

// Publisher is the part of Kafka the relay needs.
type Publisher interface {
	// Publish writes msgs and returns nil once every one is acknowledged.
	// Messages with the same key are written in slice order. An error that
	// retrying cannot fix (the message is too large, the topic is invalid)
	// wraps ErrPermanent; any other error is taken as transient. After an
	// error some of msgs may have been written: the relay publishes them
	// again, so consumers see duplicates, never gaps.
	Publish(ctx context.Context, msgs []Message) error
}

// ErrPermanent marks a publish failure that retrying cannot fix.
var ErrPermanent = errors.New("relay: permanent publish failure")

// ErrNotFound is returned for a dead letter that does not exist.
var ErrNotFound = errors.New("relay: no such dead letter")

// Dead letter states.
const (
	Failed = "failed" // publishing it failed permanently
	Parked = "parked" // held back behind an earlier dead letter of its aggregate
)

// DeadLetter is an event the relay did not publish: one that failed
// permanently, or a later event of the same aggregate parked behind it so
// that the aggregate's order holds.
type DeadLetter struct {
	Position      int64 // the event's feed position; the dead letter's id
	EventID       uuid.UUID
	AggregateID   uuid.UUID
	AggregateType string
	Sequence      int64
	EventType     string
	Topic         string
	State         string // Failed or Parked
	Error         string // the last failure; empty for a parked event
	Attempts      int
	FirstFailedAt time.Time
	LastFailedAt  time.Time
}

// Ledger is the relay's durable state: its feed checkpoint and its dead
// letters.
type Ledger interface {
	// Checkpoint returns the feed position through which every event is
	// published or dead-lettered; 0 at first.
	Checkpoint(ctx context.Context) (int64, error)

	// Advance moves the checkpoint to through and records letters, in one
	// transaction, so a crash never loses a dead letter nor publishes twice
	// an event already dead-lettered. Moving the checkpoint backwards is a
	// no-op for the checkpoint.
	Advance(ctx context.Context, through int64, letters []DeadLetter) error

	// Blocked returns the aggregates that have dead letters.
	Blocked(ctx context.Context) ([]uuid.UUID, error)

	// List returns up to limit dead letters with a position greater than
	// after, in position order.
	List(ctx context.Context, after int64, limit int) ([]DeadLetter, error)

	// Get returns one dead letter, or ErrNotFound.
	Get(ctx context.Context, position int64) (DeadLetter, error)

	// OfAggregate returns the aggregate's dead letters in sequence order.
	OfAggregate(ctx context.Context, aggregateID uuid.UUID) ([]DeadLetter, error)

	// Update stores a dead letter's new state, error and attempts, or
	// returns ErrNotFound.
	Update(ctx context.Context, l DeadLetter) error

	// Remove deletes dead letters (published at last, or discarded).
	// Unknown positions are ignored.
	Remove(ctx context.Context, positions ...int64) error

	// Count returns the number of dead letters by state.
	Count(ctx context.Context) (map[string]int, error)

	// Handled returns, for a feed without positions, the highest sequence
	// of each of the aggregates that was published or dead-lettered.
	Handled(ctx context.Context, aggregateIDs []uuid.UUID) (map[uuid.UUID]int64, error)

	// MarkHandled raises the handled sequences to seqs; they never go down.
	MarkHandled(ctx context.Context, seqs map[uuid.UUID]int64) error
}
