package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
)

type versioned struct {
	v int64
}

func newTestCache(max int) *rowCache[versioned] {
	return newRowCache(max, func(r versioned) int64 { return r.v })
}

// TestRowCacheFillAfterApply: a read that began before an Apply committed
// does not put its (older) row in the cache, even where the Apply left no
// row of its own.
func TestRowCacheFillAfterApply(t *testing.T) {
	c := newTestCache(4)
	a, b := uuid.New(), uuid.New()
	_, ok, epoch := c.get(a) // a read of a and b misses and goes to the file
	if ok {
		t.Fatal("a hit in an empty cache")
	}
	c.applied(map[uuid.UUID]versioned{a: {2}}, []uuid.UUID{b}) // an Apply commits a at 2, and b further along
	c.fill(a, versioned{1}, epoch)                             // the reads, which found the rows before the commit
	c.fill(b, versioned{1}, epoch)
	if r, ok, _ := c.get(a); !ok || r.v != 2 {
		t.Errorf("a: %v, %v; want version 2, the Apply's", r, ok)
	}
	if r, ok, _ := c.get(b); ok {
		t.Errorf("b: %v cached; want none (the file has it further along)", r)
	}
	_, _, epoch = c.get(b)
	c.fill(b, versioned{3}, epoch) // a read after the commit
	if r, ok, _ := c.get(b); !ok || r.v != 3 {
		t.Errorf("b after a fresh read: %v, %v; want version 3", r, ok)
	}
}

// TestRowCacheNewestWins: an older row never replaces a newer one.
func TestRowCacheNewestWins(t *testing.T) {
	c := newTestCache(4)
	a := uuid.New()
	c.applied(map[uuid.UUID]versioned{a: {5}}, nil)
	c.applied(map[uuid.UUID]versioned{a: {3}}, nil)
	_, _, epoch := c.get(uuid.New())
	c.fill(a, versioned{4}, epoch)
	if r, _, _ := c.get(a); r.v != 5 {
		t.Errorf("a: version %d, want 5", r.v)
	}
}

// TestRowCacheEvictsOldest: beyond max rows, the one cached first goes.
func TestRowCacheEvictsOldest(t *testing.T) {
	c := newTestCache(2)
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for i, id := range ids {
		c.applied(map[uuid.UUID]versioned{id: {int64(i + 1)}}, nil)
	}
	if _, ok, _ := c.get(ids[0]); ok {
		t.Error("the first row is still cached beyond the cap")
	}
	for _, id := range ids[1:] {
		if _, ok, _ := c.get(id); !ok {
			t.Errorf("row %s evicted, want it cached", id)
		}
	}
	if len(c.rows) != 2 {
		t.Errorf("%d rows cached, want 2", len(c.rows))
	}
}

// TestApplyUpdatesCacheInCommitOrder: of two Applies at once on one Views
// (as the rebuild's catch-up replay and the projector write the generation
// it builds), the one that commits second updates the row cache second:
// else the first one's rows, older, could land after the second's newer
// ones were evicted or dropped, and reads would go back. The test holds
// the cache's lock, so that the first Apply, committed, waits to update
// it; the second Apply must not commit meanwhile.
func TestApplyUpdatesCacheInCommitOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "views.db")
	v, err := OpenViews(path, zap.NewNop(), WithRowCache(16))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	file, err := OpenViews(path, zap.NewNop()) // no cache: what the file holds
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	ctx := context.Background()
	// 0 registers the customer; 1 and 3 are order 1's #1 and #2.
	events := readmodeltest.Pipeline(t, 4)
	order := events[1].AggregateID
	version := func() int64 {
		o, err := file.Order(ctx, order)
		if err != nil && !errors.Is(err, readmodel.ErrNotFound) {
			t.Fatal(err)
		}
		return o.Version
	}

	v.orders.mu.Lock()
	unlock := sync.OnceFunc(v.orders.mu.Unlock)
	defer unlock() // also when the test fails below
	first, second := make(chan error, 1), make(chan error, 1)
	go func() { first <- v.Apply(ctx, events[:2]) }()
	for deadline := time.Now().Add(10 * time.Second); version() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first Apply did not commit")
		}
	}
	go func() { second <- v.Apply(ctx, events[3:4]) }()
	time.Sleep(50 * time.Millisecond) // a second Apply let through commits within it
	got := version()
	unlock()
	if err := errors.Join(<-first, <-second); err != nil {
		t.Fatal(err)
	}
	if got != 1 {
		t.Errorf("the second Apply committed (order at version %d) before the first one updated the row cache", got)
	}
	if o, err := v.Order(ctx, order); err != nil || o.Version != 2 {
		t.Errorf("order through the row cache: version %d, %v; want 2", o.Version, err)
	}
}
