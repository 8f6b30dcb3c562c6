package sqlite

import (
	"sync"

	"github.com/google/uuid"
)

// rowCache keeps rows of one view in memory in front of the file, so that a
// read of a row held here costs no SQL: the rows Apply committed and the
// rows reads found, at most max of them (the one cached first goes first).
//
// It holds only what the file holds, which takes three rules. Apply puts a
// row once its transaction has committed, and only if its upsert changed
// the file (a row the file already has further along is dropped instead);
// the Applies update the cache in the order they committed (Views.applying:
// a row that an earlier commit put after a later one dropped would be
// older than the file's); and every Apply that changed rows moves the
// epoch on, after its commit. A read that missed notes the epoch before it
// reads the file and fills the cache only if the epoch has not moved
// since: a row read before a commit is never put after it. This is right
// only while the Views is the only writer of its file (see WithRowCache).
type rowCache[T any] struct {
	mu      sync.Mutex
	max     int
	rows    map[uuid.UUID]T
	ring    []uuid.UUID // the keys, in the order they were cached
	next    int         // the ring's oldest key, when it is full
	epoch   uint64
	version func(T) int64
}

func newRowCache[T any](max int, version func(T) int64) *rowCache[T] {
	return &rowCache[T]{max: max, rows: make(map[uuid.UUID]T, max), ring: make([]uuid.UUID, 0, max), version: version}
}

// read returns id's row from the cache or, on a miss, from load, which it
// then caches unless an Apply committed meanwhile (see fill). A nil cache
// always loads.
func (c *rowCache[T]) read(id uuid.UUID, load func() (T, error)) (T, error) {
	if c == nil {
		return load()
	}
	row, ok, epoch := c.get(id)
	if ok {
		return row, nil
	}
	row, err := load()
	if err != nil {
		return row, err
	}
	c.fill(id, row, epoch)
	return row, nil
}

// get returns the cached row of id and, on a miss, the epoch a fill of
// what the caller then reads must give.
func (c *rowCache[T]) get(id uuid.UUID) (row T, ok bool, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	row, ok = c.rows[id]
	return row, ok, c.epoch
}

// fill caches row, which a read found, unless an Apply committed since
// epoch or a newer row is cached.
func (c *rowCache[T]) fill(id uuid.UUID, row T, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch == epoch {
		c.set(id, row)
	}
}

// applied records an Apply's commit: put are the rows it wrote, as the
// file now has them, and drop the ids whose rows it left as they were.
func (c *rowCache[T]) applied(put map[uuid.UUID]T, drop []uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for _, id := range drop {
		delete(c.rows, id) // its key stays in the ring until its turn
	}
	for id, row := range put {
		c.set(id, row)
	}
}

// set caches row unless a newer one is cached. Called with mu held.
func (c *rowCache[T]) set(id uuid.UUID, row T) {
	if old, ok := c.rows[id]; ok {
		if c.version(row) > c.version(old) {
			c.rows[id] = row
		}
		return
	}
	if len(c.ring) < c.max {
		c.ring = append(c.ring, id)
	} else {
		delete(c.rows, c.ring[c.next])
		c.ring[c.next] = id
		c.next = (c.next + 1) % c.max
	}
	c.rows[id] = row
}
