package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// ack is one acknowledged append, with logical times taken from one counter
// just before the call and just after it returned.
type ack struct {
	ids        []uuid.UUID
	start, end int64
}

// testFeedOrder: under concurrent appends the feed holds every committed
// event once, in an order consistent with the order in which appends were
// acknowledged, and tailers reading while the appends run see the same.
func testFeedOrder(t *testing.T, b backend) {
	s := b.open(t, nil)
	ctx := testContext(t)
	const writers, appends, aggsPerWriter = 8, 25, 3
	total := 0
	for i := range appends {
		total += i%3 + 1
	}
	total *= writers

	// Tailers follow the feed while it is written. A backend that let a
	// reader see position n+1 before n commits would make one skip n.
	var tailWG sync.WaitGroup
	tails := make([][]store.Event, 2)
	for i, limit := range []int{7, 1000} {
		tailWG.Go(func() { tails[i] = tail(ctx, t, s, total, limit) })
	}

	var (
		clock atomic.Int64
		wg    sync.WaitGroup
		acks  = make([][]ack, writers)
	)
	for w := range writers {
		wg.Go(func() {
			aggs := make([]uuid.UUID, aggsPerWriter)
			versions := make([]int64, aggsPerWriter)
			for k := range aggs {
				aggs[k] = uuid.Must(uuid.NewV7())
			}
			for i := range appends {
				k, n := i%aggsPerWriter, i%3+1
				evs := widgets(aggs[k], versions[k], n)
				a := ack{start: clock.Add(1)}
				if err := s.Append(ctx, aggs[k], versions[k], evs); err != nil {
					t.Errorf("writer %d: Append: %v", w, err)
					return
				}
				a.end = clock.Add(1)
				for _, e := range evs {
					a.ids = append(a.ids, e.ID)
				}
				acks[w] = append(acks[w], a)
				versions[k] += int64(n)
			}
		})
	}
	wg.Wait()
	tailWG.Wait()
	if t.Failed() {
		return
	}

	feed := readFeedTo(t, s, 0, mustHead(t, s), 50)
	if len(feed) != total {
		t.Fatalf("feed holds %d events, want %d", len(feed), total)
	}
	pos := make(map[uuid.UUID]int64, total)
	lastSeq := make(map[uuid.UUID]int64)
	for _, e := range feed {
		if _, dup := pos[e.ID]; dup {
			t.Fatalf("event %s twice in the feed", e.ID)
		}
		pos[e.ID] = e.Position
		if e.Sequence != lastSeq[e.AggregateID]+1 {
			t.Fatalf("aggregate %s: sequence %d follows %d in the feed", e.AggregateID, e.Sequence, lastSeq[e.AggregateID])
		}
		lastSeq[e.AggregateID] = e.Sequence
	}
	for i, tl := range tails {
		if !slices.EqualFunc(tl, feed, func(a, b store.Event) bool { return a.ID == b.ID && a.Position == b.Position }) {
			t.Errorf("tailer %d saw a different feed (%d events) than the final read", i, len(tl))
		}
	}

	// If append A returned before append B started, A committed first, so
	// all of A's events precede all of B's.
	all := slices.Concat(acks...)
	for _, a := range all {
		for _, b := range all {
			if a.end >= b.start {
				continue
			}
			maxA, minB := int64(0), int64(1<<62)
			for _, id := range a.ids {
				maxA = max(maxA, pos[id])
			}
			for _, id := range b.ids {
				minB = min(minB, pos[id])
			}
			if maxA >= minB {
				t.Fatalf("an append acknowledged before another started has a later position (%d ≥ %d)", maxA, minB)
			}
		}
	}
}

// tail reads the feed from the start until it has n events.
func tail(ctx context.Context, t *testing.T, s store.Store, n, limit int) []store.Event {
	var got []store.Event
	var after int64
	for len(got) < n {
		evs, err := positioned(t, s).ReadFeed(ctx, after, limit)
		if err != nil {
			t.Errorf("tailer: ReadFeed(%d, %d) after %d of %d events: %v", after, limit, len(got), n, err)
			return got
		}
		for _, e := range evs {
			if e.Position <= after {
				t.Errorf("tailer: position %d after %d", e.Position, after)
				return got
			}
			after = e.Position
		}
		got = append(got, evs...)
	}
	return got
}

// testFeedResume: a reader that resumes from its checkpoint, the last
// position it handled, neither skips nor repeats an event.
func testFeedResume(t *testing.T, b backend) {
	s := b.open(t, nil)
	var want []store.Event
	appendSome := func(aggs, perAgg int) {
		for range aggs {
			id := uuid.Must(uuid.NewV7())
			evs := widgets(id, 0, perAgg)
			mustAppend(t, s, id, 0, evs)
			want = append(want, evs...)
		}
	}
	appendSome(4, 3)

	first, err := positioned(t, s).ReadFeed(testContext(t), 0, 5)
	if err != nil || len(first) == 0 || len(first) > 5 {
		t.Fatalf("ReadFeed(0, 5) = %d events, %v; want 1 to 5 events", len(first), err)
	}
	checkpoint := first[len(first)-1].Position
	rest := readFeedTo(t, s, checkpoint, mustHead(t, s), 4)
	b.checkEvents(t, slices.Concat(first, rest), want)

	// New commits after the reader caught up are read from the checkpoint
	// too, and only they.
	checkpoint = mustHead(t, s)
	before := len(want)
	appendSome(3, 2)
	b.checkEvents(t, readFeedTo(t, s, checkpoint, mustHead(t, s), 3), want[before:])
}

// testFeedWakes: ReadFeed waits while there is nothing new and returns the
// event of the next commit.
func testFeedWakes(t *testing.T, b backend) {
	s := b.open(t, nil)
	for round := range 3 {
		after := mustHead(t, s)
		type result struct {
			evs []store.Event
			err error
		}
		res := make(chan result, 1)
		go func() {
			evs, err := positioned(t, s).ReadFeed(testContext(t), after, 10)
			res <- result{evs, err}
		}()
		select {
		case r := <-res:
			t.Fatalf("round %d: ReadFeed returned before any commit: %d events, %v", round, len(r.evs), r.err)
		case <-time.After(50 * time.Millisecond):
			// Probably blocked by now; correctness holds either way.
		}

		id := uuid.Must(uuid.NewV7())
		want := widgets(id, 0, 2)
		mustAppend(t, s, id, 0, want)
		select {
		case r := <-res:
			if r.err != nil {
				t.Fatalf("round %d: ReadFeed: %v", round, r.err)
			}
			b.checkEvents(t, r.evs, want)
		case <-time.After(guard):
			t.Fatalf("round %d: ReadFeed not woken by a commit", round)
		}
	}
}

// testFeedCancel: a waiting ReadFeed returns ctx.Err() when its ctx ends.
func testFeedCancel(t *testing.T, b backend) {
	s := b.open(t, nil)

	ctx, cancel := context.WithCancel(testContext(t))
	res := make(chan error, 1)
	go func() {
		_, err := positioned(t, s).ReadFeed(ctx, 0, 10)
		res <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it block, though it need not have
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ReadFeed after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(guard):
		t.Fatal("ReadFeed did not return after its ctx was cancelled")
	}

	ctx, cancel = context.WithTimeout(testContext(t), 30*time.Millisecond)
	defer cancel()
	if _, err := positioned(t, s).ReadFeed(ctx, 0, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ReadFeed past its deadline: %v, want context.DeadlineExceeded", err)
	}
}
