package cql

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// writeDirect stores n events of a new aggregate as a plain, unconditional
// batch, bypassing Append: no index row and no hint, as for events written
// before the index existed or whose index row expired. Only the full sweep
// can find them.
func writeDirect(t *testing.T, s *Store, n int64) uuid.UUID {
	return writeDirectAt(t, s, "version", n)
}

// writeDirectAt is writeDirect writing the version to the static cell
// named, version as Append does or minted as Mint does.
func writeDirectAt(t *testing.T, s *Store, cell string, n int64) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	var evs []store.Event
	for seq := int64(1); seq <= n; seq++ {
		evs = append(evs, event(id, seq))
	}
	rows, err := insertArgs(id, 0, evs)
	if err != nil {
		t.Fatal(err)
	}
	b := s.sess.Session.Batch(gocql.UnloggedBatch).WithContext(ctxFor(t))
	b.Query(`UPDATE events SET `+cell+` = ? WHERE aggregate_id = ?`, n, id)
	for _, r := range rows {
		b.Query(insertCQL, r...)
	}
	if err := b.Exec(); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestToken: token computes what the server's token() does, so that an
// index shard is a slice of the ring; shardOf cuts the ring in ring order.
func TestToken(t *testing.T) {
	s := mustOpen(t, testConfig(t), nil)
	for range 50 {
		id := uuid.New()
		if err := s.Append(ctxFor(t), id, 0, []store.Event{event(id, 1)}); err != nil {
			t.Fatal(err)
		}
		var want int64
		if err := s.sess.Session.Query(`SELECT token(aggregate_id) FROM events WHERE aggregate_id = ? LIMIT 1`, id).
			WithContext(ctxFor(t)).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got := token(id); got != want {
			t.Fatalf("token(%s) = %d, the server says %d", id, got, want)
		}
	}
	for _, c := range []struct {
		tok  int64
		want int
	}{{math.MinInt64 + 1, 0}, {-1, touchShards/2 - 1}, {0, touchShards / 2}, {math.MaxInt64, touchShards - 1}} {
		if got := touchShardOf(c.tok); got != c.want {
			t.Errorf("touchShardOf(%d) = %d, want %d", c.tok, got, c.want)
		}
	}
}

// TestRecentPassDeliversLostHint: an append whose hint was lost (the store
// writes none) and that no sweep reads is delivered by the recent pass over
// the index of touched aggregates, within an interval of it.
func TestRecentPassDeliversLostHint(t *testing.T) {
	s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: 300 * time.Millisecond, RangeSplits: 4}),
		Options{NoHints: true, NoHandOff: true, NoSweep: true})
	if s.IsScylla() {
		t.Skip("on ScyllaDB the CDC log sees every append")
	}
	c := newCollector()
	run(t, s, "recent", c.handle)
	waitPass(t, s, "recent")

	want := map[uuid.UUID]int64{}
	for range 10 {
		id := uuid.Must(uuid.NewV7())
		if err := s.Append(ctxFor(t), id, 0, []store.Event{event(id, 1), event(id, 2)}); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(ctxFor(t), id, 2, []store.Event{event(id, 3)}); err != nil {
			t.Fatal(err)
		}
		want[id] = 3
		// Minted, and minted then appended to: no version cell, then one.
		minted := uuid.Must(uuid.NewV7())
		if err := s.Mint(ctxFor(t), minted, []store.Event{event(minted, 1), event(minted, 2)}); err != nil {
			t.Fatal(err)
		}
		want[minted] = 2
		if len(want)%3 == 0 {
			if err := s.Append(ctxFor(t), minted, 2, []store.Event{event(minted, 3)}); err != nil {
				t.Fatal(err)
			}
			want[minted] = 3
		}
	}
	c.waitFor(t, want, 30*time.Second)
	if n := s.sweepRows.Load(); n != 0 {
		t.Errorf("the sweep read %d aggregates, want none", n)
	}
	if n := s.recentRows.Load(); n < int64(len(want)) {
		t.Errorf("the recent passes read %d index rows, want at least %d", n, len(want))
	}
}

// TestRecentPassSkipsAnExtraRow: an index row whose append never committed
// (a crash or a refusal between the two writes) costs a read and nothing
// else: the aggregate is not parked, and the pass's watermark moves on.
func TestRecentPassSkipsAnExtraRow(t *testing.T) {
	s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: 200 * time.Millisecond}), Options{NoHints: true, NoHandOff: true, NoSweep: true})
	ghost := uuid.Must(uuid.NewV7())
	if err := s.touch(ctxFor(t), ghost); err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	run(t, s, "extra", c.handle)
	sub := s.newSubscription(context.Background(), "extra", store.Whole, nil)
	deadline := time.Now().Add(30 * time.Second)
	for {
		w, err := sub.loadWatermark(ctxFor(t))
		if err != nil {
			t.Fatal(err)
		}
		if !w.IsZero() && s.recentRows.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no recent pass saved its watermark within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.got) != 0 {
		t.Errorf("handed %v for an append that never committed", c.got)
	}
}

// sweepHook is a Store.sweepFault that records the ranges a sweep starts
// and can fail or stop them.
type sweepHook struct {
	mu     sync.Mutex
	starts []int64 // lo of each range read started
	do     func(n int, lo int64) error
}

func (h *sweepHook) fault(lo, _ int64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.starts = append(h.starts, lo)
	if h.do != nil {
		return h.do(len(h.starts), lo)
	}
	return nil
}

func (h *sweepHook) los() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.starts)
}

// TestSweepResumesFromItsCursor: a sweep stopped after three of eight
// ranges (a restart, a handover) is resumed by the next subscription of
// the consumer right after its saved cursor (the end of the second or
// third range: it is saved at most every second), not at the first range,
// and the aggregates only a sweep can find (no index row, no hint) are all
// delivered.
func TestSweepResumesFromItsCursor(t *testing.T) {
	const splits = 8
	s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: time.Hour, RangeSplits: splits}), Options{NoHints: true, NoHandOff: true})
	want := map[uuid.UUID]int64{}
	for i := range 40 {
		cell := "version"
		if i%2 == 1 {
			cell = "minted" // as Mint leaves an aggregate
		}
		want[writeDirectAt(t, s, cell, 2)] = 2
	}
	ranges := tokenRanges(splits)
	c := newCollector()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := &sweepHook{do: func(n int, _ int64) error {
		if n == 4 { // three ranges done
			cancel()
			return context.Canceled
		}
		// Slow ranges: the cursor is saved at most every second.
		time.Sleep(600 * time.Millisecond)
		return nil
	}}
	s.sweepFault = first.fault
	if err := s.Subscribe(ctx, "resume", c.handle); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if got := first.los(); len(got) != 4 || got[0] != ranges[0].lo {
		t.Fatalf("the first sweep started ranges %v, want the first four", got)
	}
	st, err := s.newSubscription(context.Background(), "resume", store.Whole, nil).loadSweep(ctxFor(t))
	next := -1
	for i, r := range ranges[1:3] {
		if st.cursor == r.hi {
			next = i + 2
		}
	}
	if err != nil || next < 0 {
		t.Fatalf("saved cursor %d, %v; want the end of the second or third range (%d, %d)", st.cursor, err, ranges[1].hi, ranges[2].hi)
	}

	second := &sweepHook{}
	s.sweepFault = second.fault
	run(t, s, "resume", c.handle)
	c.waitFor(t, want, 30*time.Second)
	if got := second.los(); len(got) == 0 || got[0] != ranges[next].lo {
		t.Fatalf("the resumed sweep started ranges %v, want the one after the cursor (%d) first", got, ranges[next].lo)
	}
}

// TestSweepRetriesAFailingRange: a range whose read fails three times is
// read again, with backoff, and the subscription keeps running: the
// aggregates only the sweep finds are delivered, the one in that range
// included.
func TestSweepRetriesAFailingRange(t *testing.T) {
	const splits = 4
	s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: time.Hour, RangeSplits: splits}), Options{NoHints: true, NoHandOff: true})
	want := map[uuid.UUID]int64{}
	for range 20 {
		want[writeDirect(t, s, 1)] = 1
	}
	bad := tokenRanges(splits)[1].lo
	fails := 0
	h := &sweepHook{do: func(_ int, lo int64) error {
		if lo == bad && fails < 3 {
			fails++
			return errors.New("read timeout (injected)")
		}
		return nil
	}}
	s.sweepFault = h.fault
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c := newCollector()
	go func() { done <- s.Subscribe(ctx, "retry", c.handle) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Subscribe: %v", err)
		}
	}()
	c.waitFor(t, want, 60*time.Second)
	select {
	case err := <-done:
		done <- err
		t.Fatalf("the subscription ended: %v", err)
	default:
	}
	if n := s.passFailures.Load(); n < 3 {
		t.Errorf("%d failed reads counted, want at least 3", n)
	}
	if got := h.los(); slices.Index(got, bad) < 0 || len(got) < splits+3 {
		t.Errorf("ranges started %v: want the failing one read again", got)
	}
}

// TestCoreAcksAfterHandling: the delivery core acknowledges a fast-path
// request (as the CDC reader's are) only once the Handler returned and the
// progress is saved, so that the reader's progress never moves past a
// change the consumer has not handled.
func TestCoreAcksAfterHandling(t *testing.T) {
	s := openWith(t, testConfig(t), Options{NoHints: true, NoHandOff: true, NoSweep: true})
	id := uuid.Must(uuid.NewV7())
	if err := s.Append(ctxFor(t), id, 0, []store.Event{event(id, 1), event(id, 2)}); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	sub := s.newSubscription(context.Background(), "acks", store.Whole, func(ctx context.Context, _ []store.Event) error {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.deliver(ctx) }()
	defer func() { cancel(); <-done }()

	ack := make(chan struct{})
	if err := sub.send(ctx, request{id: id, version: 2, known: -1, acks: []chan struct{}{ack}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ack:
		t.Fatal("acknowledged while the Handler still held the events")
	case <-time.After(300 * time.Millisecond):
	}
	close(gate)
	select {
	case <-ack:
	case <-time.After(30 * time.Second):
		t.Fatal("not acknowledged within 30 s of the Handler's return")
	}
	if got, err := sub.readProgress(ctxFor(t), id); err != nil || got != 2 {
		t.Errorf("progress when acknowledged = %d, %v; want 2", got, err)
	}
}

// TestMeasureSkew: the skew measured against a node on this host is small
// (the same clock, to half a round trip), and it is what ClockSkew reports.
func TestMeasureSkew(t *testing.T) {
	s := mustOpen(t, testConfig(t), nil)
	d, err := s.measureSkew(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	// The node's time UUID has millisecond precision at worst, and the
	// server shares this host's clock.
	if d < -time.Second || d > time.Second {
		t.Errorf("skew against a node on this host = %v, want within ±1s", d)
	}
	if s.ClockSkew() != d {
		t.Errorf("ClockSkew() = %v, want the measured %v", s.ClockSkew(), d)
	}
}

// TestSweepStateFenced: the sweep's cursor and the recent pass's watermark
// are saved under the lease's fence: a holder whose lease was taken moves
// neither, and its subscription ends with store.ErrFenced instead of
// retrying; the current holder saves both.
func TestSweepStateFenced(t *testing.T) {
	s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: 200 * time.Millisecond}), Options{NoHints: true, NoHandOff: true})
	ctx := ctxFor(t)
	const consumer = "fenced-sweep"
	if _, err := s.Acquire(ctx, consumer, "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, consumer, "a"); err != nil {
		t.Fatal(err)
	}
	epoch, err := s.Acquire(ctx, consumer, "b", time.Minute)
	if err != nil || epoch < 2 {
		t.Fatalf("Acquire(b) = %d, %v; want a second epoch", epoch, err)
	}
	lapsed := store.WithFence(ctx, store.Fence{Lease: consumer, Epoch: epoch - 1})
	current := store.WithFence(ctx, store.Fence{Lease: consumer, Epoch: epoch})
	sub := s.newSubscription(context.Background(), consumer, store.Whole, nil)

	if err := sub.saveSweep(lapsed, sweepState{cursor: 42, started: time.Now()}); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("saveSweep under the lapsed epoch = %v, want store.ErrFenced", err)
	}
	if err := sub.saveWatermark(lapsed, time.Now()); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("saveWatermark under the lapsed epoch = %v, want store.ErrFenced", err)
	}
	if st, err := sub.loadSweep(ctx); err != nil || !st.started.IsZero() {
		t.Fatalf("sweep state after the lapsed saves = %+v, %v; want none", st, err)
	}
	if w, err := sub.loadWatermark(ctx); err != nil || !w.IsZero() {
		t.Fatalf("watermark after the lapsed save = %v, %v; want none", w, err)
	}

	// A subscription under the lapsed epoch ends, fenced, at its first
	// save (the recent pass's watermark or the sweep's start).
	done := make(chan error, 1)
	go func() {
		done <- s.Subscribe(lapsed, consumer, func(context.Context, []store.Event) error { return nil })
	}()
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrFenced) {
			t.Fatalf("Subscribe under the lapsed epoch = %v, want store.ErrFenced", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Subscribe under the lapsed epoch still runs after 30 s")
	}

	if err := sub.saveSweep(current, sweepState{cursor: 42, started: time.Now()}); err != nil {
		t.Fatalf("saveSweep under the current epoch: %v", err)
	}
	if st, err := sub.loadSweep(ctx); err != nil || st.cursor != 42 {
		t.Fatalf("sweep state = %+v, %v; want cursor 42", st, err)
	}
}
