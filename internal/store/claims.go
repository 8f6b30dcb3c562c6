package store

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// ClaimRow is one claimant's row under an e-mail address's key: a
// customer's claim of the address, written before the customer's event
// that takes it (see internal/aggregate/claims.go for what makes a row
// hold the address).
type ClaimRow struct {
	// Attempt names the row: each claim writes a row of its own, never
	// another's, so that racing claimants cannot overwrite each other.
	Attempt uuid.UUID
	// Customer is the claimant.
	Customer uuid.UUID
	// Since is the customer's version when it claimed: its event that
	// takes the address is appended at that version.
	Since int64
	// At is when the customer claimed, in UTC to the millisecond.
	At time.Time
}

// EmailClaims keeps the claims of e-mail addresses as rows, each under the
// key of its address (a keyed hash: the address itself is never stored).
// Its point is to decide a claim without a lightweight transaction: each
// claimant writes its own row, then reads every row of the key.
type EmailClaims interface {
	// Claim writes row under key, then returns every row under key, row
	// included, in no particular order. The write is acknowledged by, and
	// the read answered by, a majority of the key's replicas (on CQL: the
	// QUORUM of the serial consistency's scope), so that of two Claims of
	// one key that both return, at least one returns the other's row
	// (SQLite, one writer, makes every later Claim see every earlier one).
	// An error leaves it unknown whether row was written.
	Claim(ctx context.Context, key uuid.UUID, row ClaimRow) ([]ClaimRow, error)
	// Rows returns every row under key, read as Claim reads them: a
	// claimant's later look, without writing.
	Rows(ctx context.Context, key uuid.UUID) ([]ClaimRow, error)
	// Drop deletes rows under key (matched by Attempt); rows that are not
	// there are no error. A dropped row does not come back through a late
	// retry of its write by the engine (CQL's driver may retry a write:
	// the delete is ordered after it); a Claim of the same row again is a
	// new write, the caller's own.
	Drop(ctx context.Context, key uuid.UUID, rows ...ClaimRow) error
	// Scan calls fn with every row, in no particular order, in pages; a
	// row written or dropped during the scan may be seen or not. It stops
	// at fn's first error and returns it.
	Scan(ctx context.Context, fn func(key uuid.UUID, row ClaimRow) error) error
}
