package cql

import (
	"context"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// The statements on e-mail claims: plain writes and reads, no Paxos round
// (no IF, no SERIAL read), at the quorum of claimConsistency. A row is
// written at the timestamp of its claim, so that every retry of its write
// carries the same one, and a drop's delete is stamped after it (see
// Drop).
const (
	claimWriteCQL = `INSERT INTO email_claims (claim, attempt, customer, since, at) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?`
	claimReadCQL  = `SELECT attempt, customer, since, at FROM email_claims WHERE claim = ?`
	claimDropCQL  = `DELETE FROM email_claims USING TIMESTAMP ? WHERE claim = ? AND attempt IN ?`
	claimScanCQL  = `SELECT claim, attempt, customer, since, at FROM email_claims`
)

// EmailClaims is the store.EmailClaims of a Store, on its session.
//
// Why a quorum decides: a Claim's write is acknowledged by a majority of
// the key's replicas before its read asks a majority, so of two racing
// Claims the one whose read comes second meets the other's row on at
// least one replica. The majority is taken in the scope the appends'
// lightweight transactions are linearisable in (claimConsistency), so that
// a claim is as safe as the append it guards.
//
// Its calls return store.ErrClosed after the store's Close, and an error
// wrapping store.ErrUnavailable while the cluster fails.
type EmailClaims struct{ s *Store }

// EmailClaims returns the store's e-mail claims.
func (s *Store) EmailClaims() *EmailClaims { return &EmailClaims{s: s} }

// claimConsistency is the quorum of Config.SerialConsistency's scope:
// QUORUM, over every DC, under SERIAL, and LOCAL_QUORUM under LOCAL_SERIAL,
// where every writer of a key talks to one DC. Config.Consistency is not
// used: a weaker one (ONE, say) would let two claimants miss each other.
func (c *EmailClaims) claimConsistency() gocql.Consistency {
	if c.s.cfg.SerialConsistency == gocql.Serial {
		return gocql.Quorum
	}
	return gocql.LocalQuorum
}

// Claim writes row under key, then reads every row of key, both at
// claimConsistency. The write is stamped with row.At, so that the driver's
// retry, or the caller's with the same row, writes the same cells at the
// same timestamp, and Drop's delete outranks them all.
func (c *EmailClaims) Claim(ctx context.Context, key uuid.UUID, row store.ClaimRow) ([]store.ClaimRow, error) {
	s := c.s
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	at := row.At.UTC().Truncate(time.Millisecond)
	err := s.sess.Session.Query(claimWriteCQL, gocqlUUID(key), gocqlUUID(row.Attempt), gocqlUUID(row.Customer),
		row.Since, at, at.UnixMicro()).WithContext(ctx).Consistency(c.claimConsistency()).Idempotent(true).Exec()
	if err != nil {
		return nil, fmt.Errorf("scylla: claim %s: %w", key, s.closedOr(ctx, err))
	}
	return c.rows(ctx, key)
}

// Rows reads every row of key at claimConsistency.
func (c *EmailClaims) Rows(ctx context.Context, key uuid.UUID) ([]store.ClaimRow, error) {
	if c.s.closed.Load() {
		return nil, store.ErrClosed
	}
	return c.rows(ctx, key)
}

func (c *EmailClaims) rows(ctx context.Context, key uuid.UUID) ([]store.ClaimRow, error) {
	s := c.s
	iter := s.sess.Session.Query(claimReadCQL, gocqlUUID(key)).WithContext(ctx).Consistency(c.claimConsistency()).Idempotent(true).Iter()
	var rows []store.ClaimRow
	for {
		var r store.ClaimRow
		var attempt, customer gocql.UUID
		if !iter.Scan(&attempt, &customer, &r.Since, &r.At) {
			break
		}
		r.Attempt, r.Customer, r.At = uuid.UUID(attempt), uuid.UUID(customer), r.At.UTC()
		rows = append(rows, r)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scylla: read the claims of %s: %w", key, s.closedOr(ctx, err))
	}
	return rows, nil
}

// Drop deletes rows under key in one statement, stamped 1 µs after both
// this clock and the latest of the rows' At: after every write of those
// rows, so that one retried late (its timestamp is its At) stays deleted
// whichever reaches a replica first. It writes at claimConsistency, so that
// a Claim's read after it no longer sees the rows.
func (c *EmailClaims) Drop(ctx context.Context, key uuid.UUID, rows ...store.ClaimRow) error {
	s := c.s
	if s.closed.Load() {
		return store.ErrClosed
	}
	if len(rows) == 0 {
		return nil
	}
	stamp := time.Now().UnixMicro()
	attempts := make([]gocql.UUID, len(rows))
	for i, r := range rows {
		attempts[i] = gocqlUUID(r.Attempt)
		stamp = max(stamp, r.At.UTC().Truncate(time.Millisecond).UnixMicro())
	}
	err := s.sess.Session.Query(claimDropCQL, stamp+1, gocqlUUID(key), attempts).
		WithContext(ctx).Consistency(c.claimConsistency()).Idempotent(true).Exec()
	if err != nil {
		return fmt.Errorf("scylla: drop claims of %s: %w", key, s.closedOr(ctx, err))
	}
	return nil
}

// Scan pages through the whole table (the driver pages) at
// claimConsistency: a row whose Claim returned was written at that quorum,
// which a scan at Config.Consistency (weaker, or another DC's) could miss.
func (c *EmailClaims) Scan(ctx context.Context, fn func(key uuid.UUID, row store.ClaimRow) error) error {
	s := c.s
	if s.closed.Load() {
		return store.ErrClosed
	}
	iter := s.sess.Session.Query(claimScanCQL).WithContext(ctx).Consistency(c.claimConsistency()).
		PageSize(500).Idempotent(true).Iter()
	for {
		var r store.ClaimRow
		var key, attempt, customer gocql.UUID
		if !iter.Scan(&key, &attempt, &customer, &r.Since, &r.At) {
			break
		}
		r.Attempt, r.Customer, r.At = uuid.UUID(attempt), uuid.UUID(customer), r.At.UTC()
		if err := fn(uuid.UUID(key), r); err != nil {
			_ = iter.Close()
			return err
		}
	}
	if err := iter.Close(); err != nil {
		return fmt.Errorf("scylla: scan e-mail claims: %w", s.closedOr(ctx, err))
	}
	return nil
}

var _ store.EmailClaims = (*EmailClaims)(nil)
