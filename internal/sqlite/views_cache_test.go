package sqlite

import (
	"testing"

	"github.com/google/uuid"
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
