package store

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
)

// ErrNotOwner is returned by the Idempotency operations that act for an
// attempt (Complete, Abandon, Takeover) when the record is gone
// (expired) or another attempt owns it now. Nothing is changed then.
var ErrNotOwner = errors.New("store: idempotency key owned by another attempt")

// The metadata entries every event of a keyed command carries, in the same
// write as the event: the client's key, and the id of the key's record
// (IdempotencyRecord.ID), which is what settles a record whose attempt
// died. A backend may read them to keep the record with the events.
const (
	MetaIdempotencyKey    = "idempotency_key"
	MetaIdempotencyRecord = "idempotency_record"
)

// Idempotency keeps the records of idempotency keys (the IETF httpapi
// Idempotency-Key header): which request a key was first used with, and the
// answer that request got, so that a retry is answered the same without
// running the command again.
//
// A record is a claim and a cache, not the proof that a command ran: the
// command's events carry the key's record id in their metadata, in the same
// write as the events themselves. A record left pending (by an attempt that
// died, or by one that committed events and so stored no answer: the events
// are its answer) is settled by looking for that id in the events of the
// aggregate the record names; that is why Begin stores the aggregate, and
// is durable, before the command appends anything.
//
// Every operation that changes a record is conditional on its owner (the
// attempt running it), so two attempts never both run one key.
type Idempotency interface {
	// Begin claims rec.Key for the attempt rec.Owner, of the process
	// rec.Process, when no unexpired record holds the key, storing rec
	// (State Pending, with rec.AggregateID, the aggregate the command
	// acts on) until rec.Expires, and returns rec and true; the record is
	// durable then, and only then may the command append. Otherwise it
	// returns the record that holds the key, and false. Concurrent Begins
	// of one key: exactly one gets true.
	Begin(ctx context.Context, rec IdempotencyRecord) (IdempotencyRecord, bool, error)

	// Get returns the record of key; false when there is none or it has
	// expired.
	Get(ctx context.Context, key string) (IdempotencyRecord, bool, error)

	// Complete stores the attempt's answer and marks the record Done. It
	// returns ErrNotOwner, wrapped, when c.Owner does not own the record.
	Complete(ctx context.Context, c IdempotencyClaim, resp IdempotentResponse, now time.Time) error

	// Abandon marks the record Abandoned: the attempt gave no answer worth
	// keeping (a 5xx, a panic, a client gone), and the next request with
	// the key settles it (from the events, when attached) and runs the
	// command again if it did not commit. It returns ErrNotOwner, wrapped,
	// when c.Owner does not own the record.
	Abandon(ctx context.Context, c IdempotencyClaim, now time.Time) error

	// Takeover hands a Pending or Abandoned record from the attempt c.Owner
	// to the attempt to, of the process by, and reports whether it did:
	// false when c.Owner no longer owns it (another attempt took it
	// first), the record is Done or gone. The record keeps its ID,
	// fingerprint, aggregate and expiry, and becomes Pending.
	Takeover(ctx context.Context, c IdempotencyClaim, to uuid.UUID, by Process, now time.Time) (bool, error)
}

// IdempotencyState is where a record stands.
type IdempotencyState string

// The states of a record.
const (
	// Pending: an attempt is running the request (or died running it).
	Pending IdempotencyState = "pending"
	// Done: the answer is stored; retries replay it.
	Done IdempotencyState = "done"
	// Abandoned: the last attempt kept no answer; the next one settles it.
	Abandoned IdempotencyState = "abandoned"
)

// IdempotencyRecord is what is kept of one idempotency key.
type IdempotencyRecord struct {
	Key string // the client's key, 1 to 255 printable ASCII characters
	// ID names the record: the command's events carry it in their
	// metadata. A key used again after its record expired gets a new ID,
	// so the events of the earlier use are never taken for this one.
	ID uuid.UUID
	// Fingerprint identifies the request (a hash of its method, path and
	// body): a retry must match it.
	Fingerprint []byte
	Owner       uuid.UUID // the attempt that runs the request now
	Process     Process   // the process Owner runs in
	State       IdempotencyState
	// AggregateID is the aggregate the request's command acts on, known
	// before it runs (a create's id is the client's, or ID); uuid.Nil when
	// the request names none it could act on (it is refused then).
	AggregateID uuid.UUID
	Response    IdempotentResponse // set when Done
	Created     time.Time          // kept to the millisecond at least
	Updated     time.Time          // the last change by its owner
	Expires     time.Time          // after it the key is free again
}

// Process names a process that runs attempts: its instance, a name no two
// live processes share (the one the workers' leases hold), and its boot, a
// new id at each start. A record Pending for a process of this instance
// but another boot was left by an attempt that died with that boot: it
// can be settled at once, without waiting for it to look dead.
type Process struct {
	Instance string
	Boot     uuid.UUID
}

// IdempotencyClaim is an attempt's hold on a key, which the operations
// that act for the attempt take. Expires is the record's: a backend that
// expires by TTL rewrites it with every change.
type IdempotencyClaim struct {
	Key     string
	Owner   uuid.UUID
	Expires time.Time
}

// Claim returns the claim of the record's owner.
func (r IdempotencyRecord) Claim() IdempotencyClaim {
	return IdempotencyClaim{Key: r.Key, Owner: r.Owner, Expires: r.Expires}
}

// IdempotentResponse is a stored answer: replayed byte for byte.
type IdempotentResponse struct {
	Status int
	Header map[string]string // the headers that matter (Content-Type, ETag, Location)
	Body   []byte
}
