package cql

import (
	"context"
	"fmt"
	"time"

	"github.com/orderd/orderd/internal/store"
)

// The statements of store.Membership: plain writes and reads at
// Config.Consistency (a local quorum by default), no lightweight
// transaction. A member's row expires with its heartbeat's TTL.
const (
	memberBeatCQL  = `INSERT INTO members (grp, instance, beat) VALUES (?, ?, ?) USING TTL ?`
	memberLeaveCQL = `DELETE FROM members WHERE grp = ? AND instance = ?`
	membersCQL     = `SELECT instance FROM members WHERE grp = ?`
	holdersCQL     = `SELECT name, holder, epoch FROM leases WHERE name IN ?`
)

// Heartbeat records instance as a member of group for ttl, rounded up to
// whole seconds plus one: the server expires a cell at the start of a
// second, up to a second before its TTL has passed (see Acquire).
func (s *Store) Heartbeat(ctx context.Context, group, instance string, ttl time.Duration) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if group == "" || instance == "" || ttl <= 0 {
		return fmt.Errorf("scylla: heartbeat of %q in %q for %v: want a group, an instance and a positive ttl", instance, group, ttl)
	}
	secs := int((ttl+time.Second-1)/time.Second) + 1
	err := s.sess.Session.Query(memberBeatCQL, group, instance, time.Now(), secs).WithContext(ctx).
		Consistency(s.cfg.Consistency).Idempotent(true).Exec()
	if err != nil {
		return fmt.Errorf("scylla: heartbeat of %s in %s: %w", instance, group, s.closedOr(ctx, err))
	}
	return nil
}

// Leave removes instance's row from group.
func (s *Store) Leave(ctx context.Context, group, instance string) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	err := s.sess.Session.Query(memberLeaveCQL, group, instance).WithContext(ctx).
		Consistency(s.cfg.Consistency).Idempotent(true).Exec()
	if err != nil {
		return fmt.Errorf("scylla: %s leaves %s: %w", instance, group, s.closedOr(ctx, err))
	}
	return nil
}

// Members returns the instances of group whose rows have not expired, in
// clustering order, which sorts them.
func (s *Store) Members(ctx context.Context, group string) ([]string, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	iter := s.sess.Session.Query(membersCQL, group).WithContext(ctx).
		Consistency(s.cfg.Consistency).Idempotent(true).Iter()
	var (
		out      []string
		instance string
	)
	for iter.Scan(&instance) {
		out = append(out, instance)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scylla: members of %s: %w", group, s.closedOr(ctx, err))
	}
	return out, nil
}

// Holders reads the leases names at Config.Consistency, in one request:
// a holder whose TTL ran out reads as none.
func (s *Store) Holders(ctx context.Context, names []string) ([]store.Holding, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	out := make([]store.Holding, len(names))
	if len(names) == 0 {
		return out, nil
	}
	iter := s.sess.Session.Query(holdersCQL, names).WithContext(ctx).
		Consistency(s.cfg.Consistency).Idempotent(true).Iter()
	got := make(map[string]store.Holding, len(names))
	var (
		name, holder string
		epoch        *int64
	)
	for iter.Scan(&name, &holder, &epoch) {
		got[name] = store.Holding{Holder: holder, Epoch: deref(epoch)}
		holder, epoch = "", nil
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scylla: holders of %d leases: %w", len(names), s.closedOr(ctx, err))
	}
	for i, n := range names {
		out[i] = got[n]
	}
	return out, nil
}

var _ store.Membership = (*Store)(nil)
