// Package store defines the event store port that every backend implements:
// an append-only log of event envelopes per aggregate, guarded by optimistic
// concurrency, whose committed events also form a change feed in commit
// order. The log is the outbox: nothing else has to be written for an event
// to be published. The feed (Feed) pushes those events to named consumers,
// and leases (Leases) elect which instance runs each consumer.
//
// Backends move opaque payload bytes. This package knows no domain type; the
// conformance suite in storetest checks a backend without any Order.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// ErrConflict is returned by Append when the aggregate's current version is
// not the expected one. Nothing of the refused append is stored.
var ErrConflict = errors.New("store: version conflict")

// ErrOutcomeUnknown is returned, wrapped, by an Append whose transaction
// was sent but whose outcome the store could not learn: the events may be
// stored, now or later (a request queued on a stalled server can still run
// once it resumes), or never. It is never a conflict: nothing says another
// writer took the version. It wraps ErrUnavailable, so a caller that only
// knows that answers "try again later"; a caller that can recognise its own
// events (by their ids or causation id) may Load and see whether they landed.
var ErrOutcomeUnknown = fmt.Errorf("store: outcome of the append unknown: %w", ErrUnavailable)

// ErrClosed is returned by a store that has been closed.
var ErrClosed = errors.New("store: closed")

// Event is the envelope of one stored event.
type Event struct {
	ID            uuid.UUID // UUIDv7, chosen by the writer
	AggregateID   uuid.UUID
	AggregateType string
	Sequence      int64 // 1-based version of the aggregate after this event
	Type          string
	SchemaVersion int               // the schema version of Data
	Data          json.RawMessage   // the event payload, a JSON object; reads back JSON-equal
	CausationID   uuid.UUID         // the command that caused the event
	CorrelationID uuid.UUID         // the request or conversation it belongs to
	Timestamp     time.Time         // UTC, when the command was decided; kept to the millisecond at least
	Metadata      map[string]string // an empty map may read back as nil

	// Position is the event's place in the global commit order, assigned by
	// a store that has one (SQLite) when the event is committed. Events read
	// back from such a store carry it; events handed to Append leave it
	// zero, and so do the events of a partitioned store (CQL).
	Position int64
}

// Store is an event store backend.
type Store interface {
	// Append stores events for one aggregate atomically, provided that the
	// aggregate's current version is expected (0 for an aggregate with no
	// events). The events must carry the sequences expected+1, expected+2, …
	// in order, all with the given aggregate id. It returns ErrConflict,
	// wrapped, when the version differs; then nothing is stored. It returns
	// ErrOutcomeUnknown, wrapped, when the transaction was sent but its
	// outcome could not be learnt (never ErrConflict then), and other errors
	// wrapping ErrUnavailable when the storage refused it. Otherwise it
	// returns only once the outcome is known: nil means the events are durable.
	Append(ctx context.Context, aggregateID uuid.UUID, expected int64, events []Event) error

	// Mint stores the first events of an aggregate whose id nobody else
	// can name before Mint returns: one the caller drew itself (a UUIDv7)
	// and has not handed out. It is Append at version 0, less the check
	// that nobody created the aggregate first, which a backend may skip
	// (CQL does: it is the Paxos round of the append) or keep (SQLite
	// does: it costs nothing there). Later appends, at the version Mint
	// left, are checked as every append is. Its errors are Append's;
	// ErrConflict comes only from a backend that keeps the check.
	Mint(ctx context.Context, aggregateID uuid.UUID, events []Event) error

	Loader

	// Version returns the aggregate type and the sequence of the
	// aggregate's last event (an aggregate's events all carry one type),
	// reading one row of the index, never the history. An unknown
	// aggregate has version 0 and type "", and no error. It sees every
	// Append that returned nil, as Load does.
	Version(ctx context.Context, aggregateID uuid.UUID) (aggregateType string, version int64, err error)

	// Close releases the backend. Calls after Close, a second Close
	// included, return ErrClosed.
	Close() error
}

// Loader loads an aggregate's events: the part of Store that the readers
// of one aggregate's history (time travel, dead-letter replay, a rebuild's
// fill-in, an idempotent replay's answer) need.
type Loader interface {
	// Load returns the aggregate's events whose sequence is greater than
	// after, in sequence order, upcast to their current schema. An unknown
	// aggregate has no events: Load returns an empty slice and no error.
	Load(ctx context.Context, aggregateID uuid.UUID, after int64) ([]Event, error)

	// LoadPage returns the first limit events that Load(ctx, aggregateID,
	// after) would return, in sequence order, each upcast, reading no more
	// of the history than that: a page of a long history costs the page,
	// not the history. Fewer come back only at the end of the history. It
	// returns an error for a limit below 1.
	LoadPage(ctx context.Context, aggregateID uuid.UUID, after int64, limit int) ([]Event, error)
}

// Upcaster turns stored payloads of older schema versions into the current
// shape. Backends call it on every read path, so consumers only ever see the
// current schema.
type Upcaster interface {
	// Upcast returns e with Data and SchemaVersion brought to the current
	// schema of e.Type. Events already current come back unchanged.
	Upcast(e Event) (Event, error)
}
