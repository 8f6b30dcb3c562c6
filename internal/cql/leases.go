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
// Config.SerialConsistency, and Holder reads at it too, so all instances
// agree on the holder. The TTL runs from when a replica applies the write,
// which is after the holder took its own start time (store.Leases): the
// lease outlives the holder's deadline, never the other way round.
const (
	leaseTakeCQL    = `INSERT INTO leases (name, holder) VALUES (?, ?) IF NOT EXISTS USING TTL ?`
	leaseRenewCQL   = `UPDATE leases USING TTL ? SET holder = ? WHERE name = ? IF holder = ?`
	leaseReleaseCQL = `DELETE FROM leases WHERE name = ? IF holder = ?`
	leaseHolderCQL  = `SELECT holder FROM leases WHERE name = ?`
)

// Acquire takes the lease name for holder when nobody holds it, renews it
// when holder does, and reports whether holder holds it now, for ttl
// from the call. The server keeps it for ttl rounded up to whole seconds
// plus one (see below), so a successor may wait up to two seconds more. It returns
// store.ErrClosed after Close, and an error for an empty name or holder, a
// ttl ≤ 0, or a failed request; then holder must assume it does not hold
// the lease.
func (s *Store) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if s.closed.Load() {
		return false, store.ErrClosed
	}
	if name == "" || holder == "" || ttl <= 0 {
		return false, fmt.Errorf("scylla: acquire lease %q for %q for %v: want a name, a holder and a positive ttl", name, holder, ttl)
	}
	// The server expires a cell at the start of a second: ttl seconds
	// after the start of the second it applied the write in, up to a
	// second before ttl has passed. One more second keeps the lease at
	// least ttl.
	secs := int((ttl+time.Second-1)/time.Second) + 1
	current := make(map[string]any)
	applied, err := s.lwt(ctx, leaseTakeCQL, name, holder, secs).MapScanCAS(current)
	if err != nil {
		return false, fmt.Errorf("scylla: acquire lease %s: %w", name, s.closedOr(err))
	}
	if applied {
		return true, nil
	}
	if h, _ := current["holder"].(string); h != holder {
		return false, nil
	}
	// holder has it: renew, unless it expired or was taken meanwhile.
	applied, err = s.lwt(ctx, leaseRenewCQL, secs, holder, name, holder).MapScanCAS(make(map[string]any))
	if err != nil {
		return false, fmt.Errorf("scylla: renew lease %s: %w", name, s.closedOr(err))
	}
	return applied, nil
}

// Release gives the lease name up if holder holds it; otherwise it does
// nothing. It returns store.ErrClosed after Close and an error when the
// request fails.
func (s *Store) Release(ctx context.Context, name, holder string) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if _, err := s.lwt(ctx, leaseReleaseCQL, name, holder).MapScanCAS(make(map[string]any)); err != nil {
		return fmt.Errorf("scylla: release lease %s: %w", name, s.closedOr(err))
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
		Consistency(s.cfg.SerialConsistency).Idempotent(true).Scan(&h)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("scylla: lease %s: %w", name, s.closedOr(err))
	}
	return h, nil
}

// lwt returns a conditional statement at the configured serial
// consistency. It is not idempotent: a retried take that had been applied
// would look refused.
func (s *Store) lwt(ctx context.Context, stmt string, args ...any) *gocql.Query {
	return s.sess.Session.Query(stmt, args...).WithContext(ctx).SerialConsistency(s.cfg.SerialConsistency)
}

var _ store.Leases = (*Store)(nil)
