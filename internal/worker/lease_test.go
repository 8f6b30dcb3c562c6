package worker

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// actions records when each instance's worker acted.
type actions struct {
	mu sync.Mutex
	at map[string][]time.Time
}

// worker acts every few milliseconds while its context lets it. The time
// is taken before the check, so a recorded action certainly happened while
// the lease was valid.
func (a *actions) worker(holder string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		for {
			now := time.Now()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			a.mu.Lock()
			a.at[holder] = append(a.at[holder], now)
			a.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

func (a *actions) first(holder string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.at[holder]) == 0 {
		return time.Time{}, false
	}
	return a.at[holder][0], true
}

func (a *actions) last(holder string) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.at[holder][len(a.at[holder])-1]
}

// pausable is a store's leases behind a switch that makes every call hang,
// as a partitioned or stopped instance's calls do.
type pausable struct {
	store.Leases
	mu     sync.Mutex
	paused chan struct{} // nil: calls go through; otherwise closed to resume
}

func (p *pausable) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = make(chan struct{})
}

func (p *pausable) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.paused)
	p.paused = nil
}

func (p *pausable) wait(ctx context.Context) error {
	p.mu.Lock()
	ch := p.paused
	p.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pausable) Acquire(ctx context.Context, name, holder string, ttl time.Duration) (int64, error) {
	if err := p.wait(ctx); err != nil {
		return 0, err
	}
	return p.Leases.Acquire(ctx, name, holder, ttl)
}

func newElected(t *testing.T, l store.Leases, holder string, ttl time.Duration, work func(context.Context) error) (*Elected, func()) {
	e := NewElected(l, "relay", holder, ttl, work, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: Serve: %v", holder, err)
		}
	}
	return e, stop
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func leasesOf(t *testing.T) store.Leases {
	s, err := sqlite.OpenStore(filepath.Join(t.TempDir(), "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestElectedOneActive: of two instances exactly one works; when it stops,
// the standby takes over.
func TestElectedOneActive(t *testing.T) {
	l := leasesOf(t)
	acts := &actions{at: map[string][]time.Time{}}
	const ttl = 600 * time.Millisecond
	a, stopA := newElected(t, l, "a", ttl, acts.worker("a"))
	waitUntil(t, "a is active", func() bool { return a.State().Role == RoleActive })
	// An instance turns active before its worker's goroutine first acts,
	// under load well before: a's last action is compared below, so wait
	// until it has acted at all.
	waitUntil(t, "a acts", func() bool { _, ok := acts.first("a"); return ok })
	b, stopB := newElected(t, l, "b", ttl, acts.worker("b"))
	defer stopB()
	waitUntil(t, "b has seen a as the leader", func() bool { return b.State().Leader == "a" })
	if r := b.State().Role; r != RoleStandby {
		t.Fatalf("b is %s while a holds the lease", r)
	}
	if _, acted := acts.first("b"); acted {
		t.Fatal("the standby acted while the holder held the lease")
	}

	stopA() // a clean stop releases the lease
	waitUntil(t, "b takes over", func() bool { return b.State().Role == RoleActive })
	// Likewise b: its first action is what a's last must precede, so wait
	// for it rather than compare with a time not yet recorded.
	waitUntil(t, "b acts", func() bool { _, ok := acts.first("b"); return ok })
	firstB, _ := acts.first("b")
	if lastA := acts.last("a"); !lastA.Before(firstB) {
		t.Errorf("a acted at %v, after b started at %v", lastA, firstB)
	}
}

// TestElectedStaleHolder: a holder cut off from the store stops acting by
// its own deadline; a standby takes over no sooner; when the old holder
// comes back it finds the lease taken and stands by.
func TestElectedStaleHolder(t *testing.T) {
	l := leasesOf(t)
	acts := &actions{at: map[string][]time.Time{}}
	const ttl = 600 * time.Millisecond
	cut := &pausable{Leases: l}
	a, stopA := newElected(t, cut, "a", ttl, acts.worker("a"))
	defer stopA()
	waitUntil(t, "a is active", func() bool { return a.State().Role == RoleActive })
	waitUntil(t, "a acts", func() bool { _, ok := acts.first("a"); return ok }) // see TestElectedOneActive
	b, stopB := newElected(t, l, "b", ttl, acts.worker("b"))
	defer stopB()

	cut.pause() // a's renewals hang from now on
	waitUntil(t, "b takes over", func() bool { return b.State().Role == RoleActive })
	waitUntil(t, "b acts", func() bool { _, ok := acts.first("b"); return ok })
	firstB, _ := acts.first("b")
	if lastA := acts.last("a"); !lastA.Before(firstB) {
		t.Fatalf("the cut-off holder acted at %v, after its successor started at %v", lastA, firstB)
	}

	cut.resume()
	waitUntil(t, "a stands by", func() bool { st := a.State(); return st.Role == RoleStandby && st.Leader == "b" })
	time.Sleep(2 * ttl) // a tries again meanwhile; it must keep standing by
	if r := a.State().Role; r != RoleStandby {
		t.Errorf("the old holder is %s after it came back, want standby", r)
	}
	if lastA := acts.last("a"); !lastA.Before(firstB) {
		t.Errorf("the old holder acted at %v after it came back", lastA)
	}
}

// TestElectedFenced: a holder whose lease another instance took (the
// epoch bumped) gets store.ErrFenced from its next write, which stores
// nothing; its worker stops and the instance stands by, counted as fenced
// and not as failed.
func TestElectedFenced(t *testing.T) {
	b, err := sqlite.Open(t.Context(), sqlite.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	write := make(chan struct{})
	wrote := make(chan error, 1)
	letter := relay.DeadLetter{Position: 7, EventID: uuid.New(), AggregateID: uuid.New(), AggregateType: "Order",
		Sequence: 1, EventType: "OrderCreated", Topic: "orders", State: relay.Parked}
	a, stopA := newElected(t, b.Store, "a", time.Minute, func(ctx context.Context) error {
		select {
		case <-write:
		case <-ctx.Done():
			return nil
		}
		err := b.Ledger.Record(ctx, []relay.DeadLetter{letter})
		wrote <- err
		return err
	})
	defer stopA()
	waitUntil(t, "a is active", func() bool { return a.State().Role == RoleActive })
	if e := a.State().Epoch; e != 1 {
		t.Fatalf("a's epoch = %d, want 1", e)
	}
	// a's lease lapses (as in a pause longer than its ttl) and b takes it.
	if err := b.Store.Release(t.Context(), "relay", "a"); err != nil {
		t.Fatal(err)
	}
	if e, err := b.Store.Acquire(t.Context(), "relay", "b", time.Minute); err != nil || e != 2 {
		t.Fatalf("b's take = epoch %d, %v; want 2", e, err)
	}
	close(write)
	if err := <-wrote; !errors.Is(err, store.ErrFenced) {
		t.Fatalf("the lapsed holder's write: %v, want store.ErrFenced", err)
	}
	waitUntil(t, "a stands by behind b", func() bool { st := a.State(); return st.Role == RoleStandby && st.Leader == "b" })
	if st := a.State(); st.Err != nil || st.Fenced != 1 {
		t.Errorf("a's state = err %v, fenced %d; want no failure and one fenced run", st.Err, st.Fenced)
	}
	if _, err := b.Ledger.Get(t.Context(), letter.Position); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("the fenced letter is stored: Get = %v, want relay.ErrNotFound", err)
	}
}

// TestElectedRoleFollowsDeadline: a holder cut off from the store whose
// worker does not return (stuck in a call that ignores its context) shows
// itself standby as soon as its own deadline passes, not when the worker
// returns: /readyz never shows two active instances.
func TestElectedRoleFollowsDeadline(t *testing.T) {
	l := leasesOf(t)
	const ttl = 600 * time.Millisecond
	cut := &pausable{Leases: l}
	stuck := make(chan struct{})
	a, stopA := newElected(t, cut, "a", ttl, func(ctx context.Context) error {
		<-stuck // ignores ctx, as a worker blocked in a hung call would
		return nil
	})
	defer func() { close(stuck); stopA() }()
	waitUntil(t, "a is active", func() bool { return a.State().Role == RoleActive })

	paused := time.Now()
	cut.pause() // a's renewals hang from now on; its last one was sent before this
	// a's deadline is at most paused + ttl; from then on it is a standby,
	// whatever its worker does. State reads the clock, so no scheduling
	// slack is needed beyond the sleep's.
	time.Sleep(time.Until(paused.Add(ttl + 10*time.Millisecond)))
	if st := a.State(); st.Role != RoleStandby || st.Leader == "a" {
		t.Fatalf("a lapsed holder shows role %s, leader %q, after its deadline", st.Role, st.Leader)
	}
	b, stopB := newElected(t, l, "b", ttl, func(ctx context.Context) error { <-ctx.Done(); return nil })
	defer stopB()
	waitUntil(t, "b takes over", func() bool { return b.State().Role == RoleActive })
	if r := a.State().Role; r != RoleStandby {
		t.Fatalf("a is %s while its successor is active", r)
	}
	cut.resume()
}

// TestElectedStepDown: a worker that steps down releases its lease at once,
// a standby takes it, the worker that stepped down stands aside (not
// failed) for the time it asked, and takes the lease again afterwards when
// it is free.
func TestElectedStepDown(t *testing.T) {
	l := leasesOf(t)
	const ttl = 600 * time.Millisecond
	const aside = 3 * ttl
	var mu sync.Mutex
	runs := 0
	var steppedDown time.Time // before the worker returns, so before Elected stands aside
	a, stopA := newElected(t, l, "a", ttl, func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		runs++
		if runs == 1 {
			steppedDown = time.Now()
			return StepDown(aside, errors.New("cannot publish"))
		}
		<-ctx.Done()
		return nil
	})
	defer stopA()
	waitUntil(t, "a steps down", func() bool { return a.State().Aside != nil })
	mu.Lock()
	down := steppedDown
	mu.Unlock()
	st := a.State()
	if st.Role != RoleStandby || st.Err != nil || !errors.Is(st.Aside, ErrStepDown) {
		t.Fatalf("after a step-down a shows role %s, err %v, aside %v; want standby, no failure, ErrStepDown", st.Role, st.Err, st.Aside)
	}

	// The lease was released: a standby takes it at its first try.
	b, stopB := newElected(t, l, "b", ttl, func(ctx context.Context) error { <-ctx.Done(); return nil })
	waitUntil(t, "b takes over", func() bool { return b.State().Role == RoleActive })
	if time.Since(down) < aside {
		if r := a.State().Role; r != RoleStandby {
			t.Fatalf("a is %s while it stands aside", r)
		}
	}
	stopB() // releases the lease; a takes it once its time aside is over
	waitUntil(t, "a takes the lease again", func() bool { return a.State().Role == RoleActive })
	if took := time.Since(down); took < aside {
		t.Errorf("a took the lease back %v after stepping down, before its %v aside", took, aside)
	}
	if st := a.State(); st.Aside != nil || st.Err != nil {
		t.Errorf("a runs again but shows aside %v, err %v", st.Aside, st.Err)
	}
}
