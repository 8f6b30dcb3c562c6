package store

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Errors of the data key store.
var (
	// ErrKeyNotFound: the subject has no data key (it never had one).
	ErrKeyNotFound = errors.New("store: no data key")
	// ErrKeyErased: the subject's data key was destroyed by an erasure; it
	// is never created again.
	ErrKeyErased = errors.New("store: data key erased")
)

// WrappedKey is a subject's data key as the engine keeps it: encrypted
// (wrapped) by a key-encryption key, never in plaintext.
type WrappedKey struct {
	// Subject is whom the key protects: a customer id (an order's personal
	// fields use its customer's key), or uuid.Nil for the deployment's own
	// secret (the e-mail claims' hash key).
	Subject uuid.UUID
	// KEK is the id of the key-encryption key that wrapped Wrapped.
	KEK string
	// Wrapped is the data key encrypted by the KEK; opaque here.
	Wrapped []byte
	// Created is when the key was created, in UTC to the millisecond.
	Created time.Time
}

// DataKeys keeps the wrapped data keys of the subjects of personal data
// (crypto-shredding: destroying a subject's key makes every copy of its
// ciphertext, in the log, snapshots, backups and Kafka, unreadable).
//
// The store never sees a key in plaintext: wrapping and unwrapping are the
// caller's (internal/pii). An erased key leaves a tombstone without the
// key's bytes, so that it is never created again for the same subject and
// readers can tell "erased" from "never had one".
type DataKeys interface {
	// Create stores k unless its subject already has a key: the first
	// creation wins, and every caller gets the key that is stored (k or the
	// one before it), so that concurrent first writes of one customer agree
	// on one key. It returns ErrKeyErased, wrapped, when the subject's key
	// was erased.
	Create(ctx context.Context, k WrappedKey) (WrappedKey, error)
	// Mint stores the key of a subject that no one else can name yet: an
	// id the caller has just minted and not handed out, so that no other
	// Create or Mint of it can race this one. It never overwrites a key or
	// a tombstone that Create, Erase or Rewrap wrote, whenever they ran:
	// an engine may make it cheaper than Create because there is no race
	// to settle (on CQL it is a plain write, which they all override). It
	// need not tell whether k is the stored key; a Mint of a subject with
	// a key is the caller's mistake, refused where the engine can see it
	// (SQLite).
	Mint(ctx context.Context, k WrappedKey) error
	// Get returns the subject's key: ErrKeyNotFound or ErrKeyErased,
	// wrapped, when it has none.
	Get(ctx context.Context, subject uuid.UUID) (WrappedKey, error)
	// Erase destroys the subject's key, keeping a tombstone. Erasing a
	// subject without a key leaves a tombstone too; erasing twice is not an
	// error. Once Erase returns, Get and Create return ErrKeyErased, and the
	// key's bytes are gone from the engine's live data (see each engine for
	// what of them may remain on disk, and for how long).
	Erase(ctx context.Context, subject uuid.UUID, at time.Time) error
	// Rewrap replaces the subject's wrapped key by k (the same data key
	// wrapped by another KEK) if it is still wrapped by the KEK fromKEK. It
	// returns false, and no error, when it is not (another rotation did it,
	// or the key was erased meanwhile): a rotation then reads it again.
	Rewrap(ctx context.Context, fromKEK string, k WrappedKey) (bool, error)
	// Scan calls fn with every live (not erased) key, in no particular
	// order, in pages; a key created or rewrapped during the scan may be
	// seen or not. It stops at fn's first error and returns it.
	Scan(ctx context.Context, fn func(WrappedKey) error) error
}
