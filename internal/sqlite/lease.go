package sqlite

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderd/orderd/internal/store"
)

// leases implements store.Leases in memory. A SQLite store belongs to one
// process (see lockFile), so every holder lives in this process and a map
// is a complete record; it still honours the ttl, so that a holder that
// stops renewing loses the lease exactly as on a shared store.
//
// It is also the fence of the writes made on behalf of a lease (see
// store.Fence): hold checks a fence's epoch under mu and keeps mu until
// the write is committed, so no take can come between the check and the
// commit. The epochs live as long as the process, which is as long as any
// holder of them: the next process starts every lease at epoch 1 again,
// with no holder left from before.
type leases struct {
	mu     sync.Mutex
	held   map[string]lease
	epochs map[string]int64 // the epoch of each lease's last take
	now    func() time.Time

	// members are the live members of each group (store.Membership),
	// each with the end of its heartbeat's ttl; made on first use.
	members map[string]map[string]time.Time
}

type lease struct {
	holder string
	until  time.Time
}

// Acquire takes the lease for holder, or renews it, unless another holder
// has it and its ttl has not run out.
func (s *Store) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (int64, error) {
	if err := s.checkLease(ctx, name, holder); err != nil {
		return 0, err
	}
	if ttl <= 0 {
		return 0, fmt.Errorf("sqlite: lease %s: ttl %v, want > 0", name, ttl)
	}
	l := &s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	cur, ok := l.held[name]
	if ok && cur.holder != holder && now.Before(cur.until) {
		return 0, nil
	}
	if !ok || cur.holder != holder || !now.Before(cur.until) {
		l.epochs[name]++ // a take, not a renewal
	}
	l.held[name] = lease{holder: holder, until: now.Add(ttl)}
	return l.epochs[name], nil
}

// hold checks the fence ctx carries, if any, and returns with the leases
// locked when it is the lease's current epoch: the caller commits its
// write, then calls release. It returns store.ErrFenced when another take
// came since; a nil f (a store opened without leases, as in some tests)
// fences nothing.
func (l *leases) hold(ctx context.Context, what string) (release func(), err error) {
	f, ok := store.FenceOf(ctx)
	if !ok || l == nil {
		return func() {}, nil
	}
	l.mu.Lock()
	if cur := l.epochs[f.Lease]; cur != f.Epoch {
		l.mu.Unlock()
		return nil, store.Fenced(what, f, cur)
	}
	return l.mu.Unlock, nil
}

// Release gives the lease up if holder has it.
func (s *Store) Release(ctx context.Context, name, holder string) error {
	if err := s.checkLease(ctx, name, holder); err != nil {
		return err
	}
	l := &s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.held[name]; ok && cur.holder == holder {
		delete(l.held, name)
	}
	return nil
}

// Holder returns who holds the lease, "" when nobody does.
func (s *Store) Holder(ctx context.Context, name string) (string, error) {
	if err := s.checkLease(ctx, name, "-"); err != nil {
		return "", err
	}
	l := &s.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.held[name]; ok && l.now().Before(cur.until) {
		return cur.holder, nil
	}
	return "", nil
}

func (s *Store) checkLease(ctx context.Context, name, holder string) error {
	switch {
	case s.isClosed():
		return store.ErrClosed
	case name == "" || holder == "":
		return fmt.Errorf("sqlite: lease: empty name or holder")
	}
	return ctx.Err()
}

// track records a running subscription's position for Lag; a second
// subscription of the same consumer is refused.
func (s *Store) track(consumer string, pos int64) (*atomic.Int64, error) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	if _, dup := s.subs[consumer]; dup {
		return nil, fmt.Errorf("sqlite: consumer %s is already subscribed in this process", consumer)
	}
	cur := new(atomic.Int64)
	cur.Store(pos)
	s.subs[consumer] = cur
	return cur, nil
}

func (s *Store) untrack(consumer string) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	delete(s.subs, consumer)
}

// tracked returns the position of the consumer's running subscription.
func (s *Store) tracked(consumer string) (int64, bool) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	if cur, ok := s.subs[consumer]; ok {
		return cur.Load(), true
	}
	return 0, false
}
