package sqlite

import (
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/orderd/orderd/internal/store"
)

// defaultTailEvents is how many of the latest committed events the feed
// keeps in memory at most: a consumer less than that far behind is handed
// them without reading events.db. Several of Subscribe's batches, so that
// a consumer that was busy with one batch while the writer committed the
// next ones still finds them.
const defaultTailEvents = 8 * DefaultFeedBatch

// tail is the feed's recent past in memory: exactly the events committed
// through this Store with a position above from, in position order, as
// the writer handed them over after each commit. The log stays the source
// of truth: a consumer at or past from is served from here, one behind it
// (fallen behind, or just started from a saved position) reads events.db
// until it catches up to from, and then switches. Since the writer is the
// only one that commits to the file (OpenStore's lock keeps other
// processes out) and adds every committed batch here, in commit order,
// before it wakes the readers, the events above from are never missing
// one, and the switch between the two sources skips and reorders nothing.
//
// The tail starts empty and invalid (every consumer reads the log) and is
// anchored by the first batch committed: positions are allocated inside
// the one write transaction above every position committed before it, so
// the events committed above that batch's first position minus one are
// exactly the batch's. A commit whose outcome the writer could not learn
// (its COMMIT failed: it may still have reached the disk) or an event that
// does not upcast makes the tail invalid again, until the next commit
// anchors it anew.
//
// The events are those a read of the log returns: with their position,
// the timestamp as stored (UTC, no monotonic reading), empty metadata as
// nil, and upcast. Consumers share them and must not change them, as they
// share the events of one read.
type tail struct {
	mu     sync.Mutex
	valid  bool
	from   int64
	events []store.Event
	max    int // events kept at most; when exceeded, the older half is dropped
	up     store.Upcaster

	// Counters for tests: batches handed from memory, and from the log.
	fromMemory, fromLog int64
}

// after returns up to limit of the events above pos, and false when the
// tail cannot tell (pos is below from: the caller must read the log). An
// empty slice and true mean nothing is committed above pos yet. The slice
// is the tail's own (capped, so an append to it cannot reach the tail).
func (t *tail) after(pos int64, limit int) ([]store.Event, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.valid || pos < t.from {
		t.fromLog++
		return nil, false
	}
	i := sort.Search(len(t.events), func(i int) bool { return t.events[i].Position > pos })
	j := min(i+limit, len(t.events))
	if j > i {
		t.fromMemory++
	}
	return t.events[i:j:j], true
}

// invalidate empties the tail and has every consumer read the log until
// the next commit anchors it again.
func (t *tail) invalidate() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.valid, t.events = false, nil
}

// committed adds the events of a committed batch: for each request that
// was written (results[i] nil), its events at the positions the inserts
// were given. It runs on the writer goroutine, after the commit and before
// the readers are woken.
func (t *tail) committed(batch []*appendReq, results []error) {
	var add []store.Event
	for i, r := range batch {
		if results[i] != nil {
			continue
		}
		if len(r.events) != len(r.rows) || len(r.positions) != len(r.rows) {
			// Rows written without their events (a test's request made
			// by hand): the tail cannot hold them.
			t.invalidate()
			return
		}
		for k, e := range r.events {
			e.Position = r.positions[k]
			e.Timestamp = time.Unix(0, e.Timestamp.UnixNano()).UTC()
			e.Data = slices.Clone(e.Data) // the caller's slice stays the caller's
			if len(e.Metadata) == 0 {
				e.Metadata = nil
			} else {
				e.Metadata = maps.Clone(e.Metadata)
			}
			if t.up != nil {
				var err error
				if e, err = t.up.Upcast(e); err != nil {
					// The log reports the failure to whoever reads the
					// event.
					t.invalidate()
					return
				}
			}
			add = append(add, e)
		}
	}
	if len(add) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.valid {
		t.valid, t.from, t.events = true, add[0].Position-1, nil
	}
	if n := len(t.events) + len(add); n > t.max {
		// Drop the older events, in a new array: consumers may still hold
		// slices of the old one.
		keep := min(len(t.events), max(t.max/2-len(add), 0))
		drop := len(t.events) - keep
		if drop > 0 {
			t.from = t.events[drop-1].Position
		}
		t.events = append(make([]store.Event, 0, t.max+len(add)), t.events[drop:]...)
		if len(add) > t.max {
			t.from = add[len(add)-t.max-1].Position
			add = add[len(add)-t.max:]
		}
	}
	t.events = append(t.events, add...)
}
