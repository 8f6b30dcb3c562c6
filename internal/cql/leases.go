package cql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gocql/gocql"

	"github.com/orderd/orderd/internal/store"
)

// The statements on leases. Every change is a lightweight transaction at
// SERIAL (leaseSerial), and the reads are at it too, so all instances
// agree on the holder and its epoch. The holder cell has a TTL, which runs
// from when a replica applies the write, after the holder took its own
// start time (store.Leases): the lease outlives the holder's deadline,
// never the other way round. The epoch cell has none: it outlives every
// holder, so it never goes back (see store.Fence).
//
// A take is one conditional batch on the lease's row: set the holder (with
// the TTL) if there is none, and the epoch to one more than the one read,
// if it is still that one; two takers of one expired lease cannot both
// win, and nobody takes without bumping. A renewal is conditional on both
// the holder and the epoch.
const (
	leaseReadCQL       = `SELECT holder, epoch FROM leases WHERE name = ?`
	leaseTakeHolderCQL = `UPDATE leases USING TTL ? SET holder = ? WHERE name = ? IF holder = null AND epoch = ?`
	leaseTakeEpochCQL  = `UPDATE leases SET epoch = ? WHERE name = ?`
	leaseRenewCQL      = `UPDATE leases USING TTL ? SET holder = ? WHERE name = ? IF holder = ? AND epoch = ?`
	leaseReleaseCQL    = `UPDATE leases SET holder = null WHERE name = ? IF holder = ?`
	leaseHolderCQL     = `SELECT holder FROM leases WHERE name = ?`
)

// Acquire takes the lease name for holder when nobody holds it, renews it
// when holder does, and returns its epoch when holder holds it now, for
// ttl from the call, 0 when it does not. The server keeps it for ttl
// rounded up to whole seconds plus one (see below), so a successor may
// wait up to two seconds more. It costs a read at serial consistency and
// one lightweight transaction. It returns store.ErrClosed after Close, and
// an error for an empty name or holder, a ttl ≤ 0, or a failed request;
// then holder must assume it does not hold the lease.
func (s *Store) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (int64, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	if name == "" || holder == "" || ttl <= 0 {
		return 0, fmt.Errorf("scylla: acquire lease %q for %q for %v: want a name, a holder and a positive ttl", name, holder, ttl)
	}
	// The server expires a cell at the start of a second: ttl seconds
	// after the start of the second it applied the write in, up to a
	// second before ttl has passed. One more second keeps the lease at
	// least ttl.
	secs := int((ttl+time.Second-1)/time.Second) + 1
	var (
		cur   string
		epoch *int64
	)
	err := s.sess.Session.Query(leaseReadCQL, name).WithContext(ctx).
		Consistency(leaseSerial).Idempotent(true).Scan(&cur, &epoch)
	if err != nil && !errors.Is(err, gocql.ErrNotFound) {
		return 0, fmt.Errorf("scylla: acquire lease %s: %w", name, s.closedOr(ctx, err))
	}
	var e int64
	if epoch != nil {
		e = *epoch
	}
	switch cur {
	case holder: // renew, unless it expired or was taken meanwhile
		applied, err := s.lwt(ctx, leaseRenewCQL, secs, holder, name, holder, nullable(e)).MapScanCAS(map[string]any{})
		if err != nil {
			return 0, fmt.Errorf("scylla: renew lease %s: %w", name, s.closedOr(ctx, err))
		}
		if applied {
			return e, nil
		}
		return 0, nil
	case "":
		b := s.sess.Session.Batch(gocql.LoggedBatch).WithContext(ctx).SerialConsistency(leaseSerial)
		b.Query(leaseTakeHolderCQL, secs, holder, name, nullable(e))
		b.Query(leaseTakeEpochCQL, e+1, name)
		applied, _, err := casBatch(s.sess.Session, b)
		if err != nil {
			return 0, fmt.Errorf("scylla: take lease %s: %w", name, s.closedOr(ctx, err))
		}
		if applied {
			return e + 1, nil
		}
		return 0, nil
	default:
		return 0, nil
	}
}

// Release gives the lease name up if holder holds it; otherwise it does
// nothing. It returns store.ErrClosed after Close and an error when the
// request fails.
func (s *Store) Release(ctx context.Context, name, holder string) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	// The holder cell only: the epoch stays, so the next take bumps it.
	if _, err := s.lwt(ctx, leaseReleaseCQL, name, holder).MapScanCAS(make(map[string]any)); err != nil {
		return fmt.Errorf("scylla: release lease %s: %w", name, s.closedOr(ctx, err))
	}
	return nil
}

// Holder returns who holds the lease name, "" when nobody does. It returns
// store.ErrClosed after Close and an error when the read fails.
func (s *Store) Holder(ctx context.Context, name string) (string, error) {
	if s.closed.Load() {
		return "", store.ErrClosed
	}
	var h string
	err := s.sess.Session.Query(leaseHolderCQL, name).WithContext(ctx).
		Consistency(leaseSerial).Idempotent(true).Scan(&h)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("scylla: lease %s: %w", name, s.closedOr(ctx, err))
	}
	return h, nil
}

// lwt returns a conditional statement at the configured serial
// consistency. It is not idempotent: a retried take that had been applied
// would look refused.
func (s *Store) lwt(ctx context.Context, stmt string, args ...any) *gocql.Query {
	return s.sess.Session.Query(stmt, args...).WithContext(ctx).SerialConsistency(leaseSerial)
}

var _ store.Leases = (*Store)(nil)
