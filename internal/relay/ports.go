package relay

import (
	"context"
	"errors"
	"fmt"
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
	// Position is the dead letter's id: the event's feed position where the
	// store has a global commit order (SQLite), otherwise a number derived
	// from the event id (see letterPosition). Either way one event always
	// gets the same one.
	Position      int64
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

// Operator commands on a dead letter, carried out by the active relay.
const (
	OpReplay  = "replay"  // publish the aggregate's dead letters in order
	OpDiscard = "discard" // drop this one, then replay the rest
)

// Request states.
const (
	RequestPending = "pending" // waiting for the active relay
	RequestDone    = "done"    // carried out: every dead letter of the aggregate is published
	RequestFailed  = "failed"  // a dead letter failed permanently again; Error says why
	RequestMissing = "missing" // the dead letter was gone when the relay got to it
)

// Request is an operator's command on a dead letter, queued in the ledger
// so that whichever instance runs the relay carries it out, and its
// outcome once it has. A dead letter has at most one request at a time.
type Request struct {
	Position    int64     // the dead letter's
	ID          uuid.UUID // names this request among the dead letter's successive ones
	Op          string    // OpReplay or OpDiscard
	RequestedAt time.Time
	State       string // RequestPending until the relay finishes it
	Published   int    // how many events the relay published for it
	Error       string // for RequestFailed: the permanent failure
	FinishedAt  time.Time
}

// Check reports what no ledger may store, in the same words on every
// backend: a position below 1, an unknown state, negative attempts.
func (l DeadLetter) Check() error {
	switch {
	case l.Position < 1:
		return fmt.Errorf("letter %d: the position must be 1 or more", l.Position)
	case l.State != Failed && l.State != Parked:
		return fmt.Errorf("letter %d: state %q is neither %q nor %q", l.Position, l.State, Failed, Parked)
	case l.Attempts < 0:
		return fmt.Errorf("letter %d: attempts %d is negative", l.Position, l.Attempts)
	}
	return nil
}

// Ledger is the relay's durable state: its dead letters and the operators'
// requests on them. It is shared by every instance of a deployment, so
// that any of them can list and request, while the active relay records
// and carries out. Implementations keep times to the millisecond at least,
// and read them back in UTC.
type Ledger interface {
	// Record stores letters. A letter whose position is recorded already
	// keeps the stored row: the feed may hand an event again after a
	// crash, and the stored letter may have moved on since (more attempts,
	// a newer error) which an overwrite would undo. It fails for a letter
	// with a position below 1, a state other than Failed or Parked, or
	// negative attempts. After an error some letters may be stored;
	// recording them again is harmless.
	Record(ctx context.Context, letters []DeadLetter) error

	// Blocked returns the aggregates that have dead letters, each with the
	// lowest sequence among them: the relay parks the aggregate's events
	// from that sequence on.
	//
	// Under a fence (store.WithFence: the relay's lease and the epoch of
	// its take), Blocked first claims the ledger for that epoch, never
	// backwards, and then reads what every earlier holder committed: from
	// then on the writes of an earlier epoch are refused, so none lands
	// after the read. It returns an error wrapping store.ErrFenced when a
	// later epoch has claimed the ledger already.
	//
	// Record, Update, Remove and Finish under a fence are refused with
	// store.ErrFenced, storing nothing, once a later epoch claimed the
	// ledger (or took the lease). Writes without a fence (an operator's
	// Request) are not fenced.
	Blocked(ctx context.Context) (map[uuid.UUID]int64, error)

	// List returns up to limit (1 or more) dead letters with a position
	// greater than after, in position order.
	List(ctx context.Context, after int64, limit int) ([]DeadLetter, error)

	// Get returns one dead letter, or an error wrapping ErrNotFound.
	Get(ctx context.Context, position int64) (DeadLetter, error)

	// OfAggregate returns the aggregate's dead letters in sequence order.
	OfAggregate(ctx context.Context, aggregateID uuid.UUID) ([]DeadLetter, error)

	// Update stores a dead letter's State, Error, Attempts and
	// LastFailedAt; what identifies the event and FirstFailedAt stay as
	// recorded. It returns an error wrapping ErrNotFound for an unknown
	// letter, and an error for an invalid state.
	Update(ctx context.Context, l DeadLetter) error

	// Remove deletes dead letters (published at last, or discarded).
	// Unknown positions are ignored.
	Remove(ctx context.Context, positions ...int64) error

	// Count returns the number of dead letters by state, Failed and Parked
	// always present.
	Count(ctx context.Context) (map[string]int, error)

	// Request queues q (pending, whatever q.State says) on the dead letter
	// at q.Position, unless a request is pending there already; it returns
	// the request that is pending now, q or the earlier one. A finished
	// request is replaced. It returns an error wrapping ErrNotFound when
	// there is no such dead letter, and an error for an unknown Op.
	Request(ctx context.Context, q Request) (Request, error)

	// Requests returns the pending requests in position order.
	Requests(ctx context.Context) ([]Request, error)

	// RequestAt returns the latest request on the dead letter at position,
	// pending or finished (also after the letter is gone), or an error
	// wrapping ErrNotFound when there is none.
	RequestAt(ctx context.Context, position int64) (Request, error)

	// Finish records the outcome of the pending request q.ID: q.State
	// (RequestDone, RequestFailed or RequestMissing), Published, Error and
	// FinishedAt. It is a no-op when that request is not pending any more
	// (finished already, or replaced), so finishing again is harmless.
	Finish(ctx context.Context, q Request) error

	// PartitionRecord keeps the partition count of each topic, which the
	// relay's partition guard checks (see GuardPartitions).
	PartitionRecord
}
