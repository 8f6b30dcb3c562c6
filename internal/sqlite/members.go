package sqlite

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/orderd/orderd/internal/store"
)

// Heartbeat records instance as a member of group for ttl. Like the
// leases, membership lives in memory: a SQLite store belongs to one
// process, so every member is in it.
func (s *Store) Heartbeat(ctx context.Context, group, instance string, ttl time.Duration) error {
	if err := s.checkLease(ctx, group, instance); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("sqlite: heartbeat of %s in %s: ttl %v, want > 0", instance, group, ttl)
	}
	l := &s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.members == nil {
		l.members = map[string]map[string]time.Time{}
	}
	if l.members[group] == nil {
		l.members[group] = map[string]time.Time{}
	}
	l.members[group][instance] = l.now().Add(ttl)
	return nil
}

// Leave removes instance from group.
func (s *Store) Leave(ctx context.Context, group, instance string) error {
	if err := s.checkLease(ctx, group, instance); err != nil {
		return err
	}
	l := &s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.members[group], instance)
	return nil
}

// Members returns the members of group whose heartbeat has not expired,
// sorted.
func (s *Store) Members(ctx context.Context, group string) ([]string, error) {
	if err := s.checkLease(ctx, group, "-"); err != nil {
		return nil, err
	}
	l := &s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var out []string
	for m, until := range l.members[group] {
		if now.Before(until) {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Holders returns the holder and the epoch of each lease of names.
func (s *Store) Holders(ctx context.Context, names []string) ([]store.Holding, error) {
	if err := s.checkLease(ctx, "-", "-"); err != nil {
		return nil, err
	}
	l := &s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	out := make([]store.Holding, len(names))
	for i, n := range names {
		out[i].Epoch = l.epochs[n]
		if cur, ok := l.held[n]; ok && now.Before(cur.until) {
			out[i].Holder = cur.holder
		}
	}
	return out, nil
}

var _ store.Membership = (*Store)(nil)
