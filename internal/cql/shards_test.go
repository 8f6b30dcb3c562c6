package cql

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

// withShards returns cfg asking for n shards.
func withShards(cfg Config, n int) Config {
	cfg.Shards = n
	return cfg
}

// idIn returns a new aggregate id of shard index of count.
func idIn(index, count int) uuid.UUID {
	for {
		id := uuid.Must(uuid.NewV7())
		if shardOf(id, count) == index {
			return id
		}
	}
}

// fenceOf takes consumer's lease of shard sh for holder and returns the
// fence of its writes.
func fenceOf(t *testing.T, s *Store, consumer string, sh store.Shard, holder string) store.Fence {
	t.Helper()
	name := sh.Lease(consumer)
	epoch, err := s.Acquire(ctxFor(t), name, holder, time.Minute)
	if err != nil || epoch == 0 {
		t.Fatalf("Acquire(%s, %s) = %d, %v; want the lease", name, holder, epoch, err)
	}
	return store.Fence{Lease: name, Epoch: epoch, Shard: sh}
}

// subscribeFenced runs a subscription of consumer under f until the test
// ends, and returns a channel that has its end.
func subscribeFenced(t *testing.T, s *Store, consumer string, f store.Fence, h store.Handler) <-chan error {
	done, _ := subscribeStop(t, s, consumer, f, h)
	return done
}

// subscribeStop is subscribeFenced that also returns a stop, which
// returns once the subscription has.
func subscribeStop(t *testing.T, s *Store, consumer string, f store.Fence, h store.Handler) (<-chan error, func()) {
	ctx, cancel := context.WithCancel(store.WithFence(context.Background(), f))
	done := make(chan error, 1)
	ended := make(chan struct{})
	go func() { done <- s.Subscribe(ctx, consumer, h); close(ended) }()
	t.Cleanup(cancel)
	return done, func() { cancel(); <-ended }
}

// orderedCollector is a collector that also fails the test when an
// aggregate's event comes before the one below it.
type orderedCollector struct {
	*collector
	t   *testing.T
	top map[uuid.UUID]int64
}

func newOrdered(t *testing.T) *orderedCollector {
	return &orderedCollector{collector: newCollector(), t: t, top: map[uuid.UUID]int64{}}
}

func (c *orderedCollector) handle(ctx context.Context, evs []store.Event) error {
	c.mu.Lock()
	for _, e := range evs {
		if e.Sequence > c.top[e.AggregateID]+1 {
			c.t.Errorf("aggregate %s: event %d handed before %d", e.AggregateID, e.Sequence, c.top[e.AggregateID]+1)
		}
		c.top[e.AggregateID] = max(c.top[e.AggregateID], e.Sequence)
	}
	c.mu.Unlock()
	return c.collector.handle(ctx, evs)
}

// handed returns a copy of what the collector was handed.
func (c *collector) handed() map[uuid.UUID]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[uuid.UUID]int64, len(c.got))
	for id, v := range c.got {
		out[id] = v
	}
	return out
}

// TestShardOfAgreesWithTheServer: shardOf is the top bits of the token
// Cassandra computes (token(aggregate_id)), for every shard count, and each
// shard's token range holds its aggregates; the keyspace's count is the one
// of its first migration, whatever a later start asks.
func TestShardOfAgreesWithTheServer(t *testing.T) {
	cfg := withShards(testConfig(t), 8)
	s := openWith(t, cfg, Options{NoHints: true, NoHandOff: true})
	if got := s.Shards(); got != 8 {
		t.Fatalf("Shards() = %d, want the 8 of the first migration", got)
	}
	ids := map[uuid.UUID]bool{}
	for range 300 {
		ids[writeDirect(t, s, 1)] = true
	}
	iter := s.sess.Session.Query(`SELECT aggregate_id, token(aggregate_id) FROM events`).WithContext(ctxFor(t)).Iter()
	var (
		id  uuid.UUID
		tok int64
		n   int
	)
	for iter.Scan(&id, &tok) {
		n++
		if token(id) != tok {
			t.Fatalf("token(%s) = %d, the server says %d", id, token(id), tok)
		}
		for count := 1; count <= MaxShards; count *= 2 {
			sh := shardOf(id, count)
			want := int((uint64(tok) ^ 1<<63) >> 56) // the top 8 bits: shard of 256
			if sh != want/(MaxShards/count) {
				t.Fatalf("shardOf(%s, %d) = %d, want %d (token %d)", id, count, sh, want/(MaxShards/count), tok)
			}
			if r := tokenRangeOf(sh, count); tok <= r.lo || tok > r.hi {
				t.Fatalf("token %d of %s is not in the range (%d, %d] of its shard %d of %d", tok, id, r.lo, r.hi, sh, count)
			}
		}
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	if n != len(ids) {
		t.Fatalf("read %d aggregates, wrote %d", n, len(ids))
	}
	again := openWith(t, withShards(cfg, 32), Options{NoHints: true, NoHandOff: true})
	if got := again.Shards(); got != 8 {
		t.Errorf("a later start asking 32: Shards() = %d, want the stored 8", got)
	}
	if _, err := OpenStore(ctxFor(t), withShards(cfg, 3), Options{}); err == nil {
		t.Error("Open with 3 shards: want an error, 3 is not a power of two")
	}
}

// TestShardedSubscriptions: the subscriptions of one consumer on the four
// shards of a keyspace each get exactly their shard's aggregates, in order
// per aggregate, and together every event: those the fast path brings,
// and those only the sweep of each shard's token range can find. Their
// lags are per shard, and Lag is their sum.
func TestShardedSubscriptions(t *testing.T) {
	const count, consumer = 4, "sharded"
	s := openWith(t, withShards(testConfig(t), count), Options{})
	want := make([]map[uuid.UUID]int64, count)
	for i := range want {
		want[i] = map[uuid.UUID]int64{}
	}
	for range 8 { // no index row, no hint: the first sweep of each shard's
		id := writeDirect(t, s, 2)
		want[shardOf(id, count)][id] = 2
	}
	cols := make([]*orderedCollector, count)
	stops := make([]func(), count)
	for i := range count {
		sh := store.Shard{Index: i, Count: count}
		cols[i] = newOrdered(t)
		_, stops[i] = subscribeStop(t, s, consumer, fenceOf(t, s, consumer, sh, "a"), cols[i].handle)
	}
	for range 24 {
		id := uuid.Must(uuid.NewV7())
		if err := s.Append(ctxFor(t), id, 0, []store.Event{event(id, 1), event(id, 2)}); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(ctxFor(t), id, 2, []store.Event{event(id, 3)}); err != nil {
			t.Fatal(err)
		}
		want[shardOf(id, count)][id] = 3
	}
	for i, c := range cols {
		c.waitFor(t, want[i], 60*time.Second)
	}
	for i, c := range cols {
		for id := range c.handed() {
			if shardOf(id, count) != i {
				t.Errorf("shard %d's subscription was handed %s, of shard %d", i, id, shardOf(id, count))
			}
		}
	}
	for i := range count {
		sh := store.Shard{Index: i, Count: count}
		deadline := time.Now().Add(30 * time.Second)
		for {
			l, err := s.ShardLag(ctxFor(t), consumer, sh)
			if err != nil {
				t.Fatal(err)
			}
			if l.Known {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no pass of shard %d within 30 s", i)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if _, err := s.ShardLag(ctxFor(t), consumer, store.Shard{Index: 0, Count: 8}); err == nil {
		t.Error("ShardLag of a shard of 8 on a keyspace of 4: want an error")
	}

	// Stopped, the shards' lags are what their passes saved, and Lag sums
	// them: here figures of our own, written where the passes write.
	for _, stop := range stops {
		stop()
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	for i := range count {
		key := store.Shard{Index: i, Count: count}.Lease(consumer)
		if err := s.sess.Session.Query(lagSaveCQL, key, int64(i+1), int64(1000*(i+1)), at.Add(-time.Duration(i)*time.Second)).
			WithContext(ctxFor(t)).Exec(); err != nil {
			t.Fatal(err)
		}
	}
	l, err := s.Lag(ctxFor(t), consumer)
	wantLag := store.Lag{Known: true, Events: 1 + 2 + 3 + 4, Age: 4 * time.Second, At: at.Add(-3 * time.Second)}
	if err != nil || l != wantLag {
		t.Errorf("Lag = %+v, %v; want the sum over the shards %+v", l, err, wantLag)
	}
	if l, err := s.ShardLag(ctxFor(t), consumer, store.Shard{Index: 2, Count: count}); err != nil || l.Events != 3 {
		t.Errorf("ShardLag(2) = %+v, %v; want its 3 events", l, err)
	}
	if err := s.sess.Session.Query(`DELETE FROM feed_lag WHERE consumer = ?`, store.Shard{Index: 1, Count: count}.Lease(consumer)).
		WithContext(ctxFor(t)).Exec(); err != nil {
		t.Fatal(err)
	}
	if l, err := s.Lag(ctxFor(t), consumer); err != nil || l.Known {
		t.Errorf("Lag with a shard never passed = %+v, %v; want unknown", l, err)
	}
}

// TestRecentPassOfItsShardOnly: on a keyspace of 128 shards (two per index
// shard), an append the fast path missed is found by the recent pass of its
// own shard, never by that of the other shard of its index shard; an
// aggregate of a shard nobody subscribes is handed to nobody.
func TestRecentPassOfItsShardOnly(t *testing.T) {
	const count, consumer = 128, "recent-shard"
	s := openWith(t, withShards(testConfig(t), count), Options{NoHints: true, NoHandOff: true, NoSweep: true})
	if s.IsScylla() {
		t.Skip("on ScyllaDB the CDC log sees every append")
	}
	a, b := store.Shard{Index: 40, Count: count}, store.Shard{Index: 41, Count: count} // both in index shard 20
	ca, cb := newOrdered(t), newOrdered(t)
	subscribeFenced(t, s, consumer, fenceOf(t, s, consumer, a, "x"), ca.handle)
	subscribeFenced(t, s, consumer, fenceOf(t, s, consumer, b, "x"), cb.handle)
	wantA, wantB := map[uuid.UUID]int64{}, map[uuid.UUID]int64{}
	other := idIn(42, count)
	for _, id := range []uuid.UUID{idIn(a.Index, count), idIn(a.Index, count), idIn(b.Index, count), other} {
		if err := s.Append(ctxFor(t), id, 0, []store.Event{event(id, 1), event(id, 2)}); err != nil {
			t.Fatal(err)
		}
		switch shardOf(id, count) {
		case a.Index:
			wantA[id] = 2
		case b.Index:
			wantB[id] = 2
		}
	}
	ca.waitFor(t, wantA, 30*time.Second)
	cb.waitFor(t, wantB, 30*time.Second)
	// Two more passes of each, so that a leak would have shown.
	time.Sleep(3 * testFeed.ReconcileEvery)
	for name, c := range map[string]struct {
		got  map[uuid.UUID]int64
		want map[uuid.UUID]int64
	}{"A": {ca.handed(), wantA}, "B": {cb.handed(), wantB}} {
		if len(c.got) != len(c.want) {
			t.Errorf("shard %s's subscription was handed %v, want only %v", name, c.got, c.want)
		}
	}
	if s.sweepRows.Load() != 0 {
		t.Error("a sweep ran; want only the recent passes")
	}
}

// TestShardFences: the holder of shard A's lease is refused its saves once
// A's lease is taken (its subscription ends with store.ErrFenced), while
// the holder of shard B goes on handing and saving.
func TestShardFences(t *testing.T) {
	const count, consumer = 2, "fenced-shards"
	s := openWith(t, withShards(testConfig(t), count), Options{})
	a, b := store.Shard{Index: 0, Count: count}, store.Shard{Index: 1, Count: count}
	ca, cb := newCollector(), newCollector()
	doneA := subscribeFenced(t, s, consumer, fenceOf(t, s, consumer, a, "one"), ca.handle)
	doneB := subscribeFenced(t, s, consumer, fenceOf(t, s, consumer, b, "one"), cb.handle)
	appendIn := func(sh store.Shard) uuid.UUID {
		id := idIn(sh.Index, count)
		if err := s.Append(ctxFor(t), id, 0, []store.Event{event(id, 1)}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	ca.waitFor(t, map[uuid.UUID]int64{appendIn(a): 1}, 30*time.Second)
	cb.waitFor(t, map[uuid.UUID]int64{appendIn(b): 1}, 30*time.Second)

	// A's lease lapses and "two" takes it: the epoch moves on.
	if err := s.Release(ctxFor(t), a.Lease(consumer), "one"); err != nil {
		t.Fatal(err)
	}
	if f := fenceOf(t, s, consumer, a, "two"); f.Epoch != 2 {
		t.Fatalf("the second take of A's lease has epoch %d, want 2", f.Epoch)
	}
	lateA := appendIn(a)
	select {
	case err := <-doneA:
		if !errors.Is(err, store.ErrFenced) {
			t.Fatalf("A's subscription ended with %v, want store.ErrFenced", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("A's former holder still runs 30 s after its lease was taken")
	}
	sub := s.newSubscription(context.Background(), consumer, a, nil)
	if v, err := sub.readProgress(ctxFor(t), lateA); err != nil || v != 0 {
		t.Errorf("progress of %s = %d, %v; want 0: the fenced holder saved nothing", lateA, v, err)
	}
	cb.waitFor(t, map[uuid.UUID]int64{appendIn(b): 1}, 30*time.Second)
	select {
	case err := <-doneB:
		t.Fatalf("B's subscription ended with %v; want it running", err)
	default:
	}
}

// TestDeadLettersPerShard: the dead letters of two shards live in
// partitions of their own, each fenced by its own relay's epoch: a new
// holder of shard A refuses A's former holder, and shard B's holder writes
// on; the operators' reads span both; each relay is given the requests on
// its own shard's letters.
func TestDeadLettersPerShard(t *testing.T) {
	const count = 4
	cfg := withShards(testConfig(t), count)
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	b, err := Open(ctxFor(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	l := b.Ledger
	c := ctxFor(t)
	shA, shB := store.Shard{Index: 1, Count: count}, store.Shard{Index: 2, Count: count}
	fence := func(sh store.Shard, epoch int64) context.Context {
		return store.WithFence(c, store.Fence{Lease: sh.Lease(relay.Consumer), Epoch: epoch, Shard: sh})
	}
	a1, b1 := fence(shA, 1), fence(shB, 1)
	for _, ctx := range []context.Context{a1, b1} {
		if blocked, err := l.Blocked(ctx); err != nil || len(blocked) != 0 {
			t.Fatalf("Blocked = %v, %v; want none", blocked, err)
		}
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	letter := func(pos int64, agg uuid.UUID) relay.DeadLetter {
		return relay.DeadLetter{Position: pos, EventID: uuid.New(), AggregateID: agg, AggregateType: "Order",
			Sequence: 1, EventType: "OrderPlaced", Topic: "orders", State: relay.Failed, Error: "boom",
			Attempts: 1, FirstFailedAt: now, LastFailedAt: now}
	}
	aggA, aggB := idIn(shA.Index, count), idIn(shB.Index, count)
	if err := l.Record(a1, []relay.DeadLetter{letter(10, aggA)}); err != nil {
		t.Fatalf("Record under A: %v", err)
	}
	if err := l.Record(b1, []relay.DeadLetter{letter(20, aggB)}); err != nil {
		t.Fatalf("Record under B: %v", err)
	}
	if err := l.Record(a1, []relay.DeadLetter{letter(11, aggB)}); err == nil {
		t.Error("Record under A of a letter of B's aggregate: want an error")
	}
	if _, err := l.Request(c, relay.Request{ID: uuid.New(), Position: 10, Op: relay.OpReplay, RequestedAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Request(c, relay.Request{ID: uuid.New(), Position: 20, Op: relay.OpDiscard, RequestedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, cs := range []struct {
		ctx  context.Context
		want int64
	}{{a1, 10}, {b1, 20}} {
		qs, err := l.Requests(cs.ctx)
		if err != nil || len(qs) != 1 || qs[0].Position != cs.want {
			t.Errorf("Requests of a shard = %v, %v; want only the one on letter %d", qs, err, cs.want)
		}
	}

	// A new holder of A claims A's partition.
	a2 := fence(shA, 2)
	if blocked, err := l.Blocked(a2); err != nil || len(blocked) != 1 || blocked[aggA] != 1 {
		t.Fatalf("Blocked(A at 2) = %v, %v; want A's letter only", blocked, err)
	}
	if err := l.Record(a1, []relay.DeadLetter{letter(12, aggA)}); !errors.Is(err, store.ErrFenced) {
		t.Errorf("Record by A's former holder = %v, want store.ErrFenced", err)
	}
	if _, err := l.Blocked(b1); err != nil {
		t.Errorf("Blocked(B at 1) after A's new claim = %v, want B unaffected", err)
	}
	moved := letter(20, aggB)
	moved.Attempts, moved.State = 2, relay.Parked
	moved.FirstFailedAt, moved.LastFailedAt = time.Time{}, time.Time{}
	if err := l.Update(b1, moved); err != nil {
		t.Errorf("Update by B's holder after A's new claim = %v, want it stored", err)
	}
	if err := l.Remove(a2, 10); err != nil {
		t.Errorf("Remove by A's new holder = %v", err)
	}

	all, err := l.List(c, 0, 10)
	if err != nil || len(all) != 1 || all[0].Position != 20 || all[0].State != relay.Parked {
		t.Errorf("List = %v, %v; want B's parked letter 20", all, err)
	}
	if n, err := l.Count(c); err != nil || n[relay.Parked] != 1 || n[relay.Failed] != 0 {
		t.Errorf("Count = %v, %v; want one parked", n, err)
	}
	if _, err := l.Get(c, 20); err != nil {
		t.Errorf("Get(20) = %v", err)
	}
	// The request on the letter A removed is still A's alone, to finish as
	// missing in its turn: another shard's relay that looked while a
	// replay had removed the letter and not yet recorded the outcome would
	// tell the operator the letter never existed (CI15).
	if qs, err := l.Requests(b1); err != nil || len(qs) != 1 || qs[0].Position != 20 {
		t.Errorf("Requests of B = %v, %v; want only its own, not the one on A's removed letter", qs, err)
	}
	if qs, err := l.Requests(a2); err != nil || len(qs) != 1 || qs[0].Position != 10 {
		t.Errorf("Requests of A = %v, %v; want the one on its removed letter", qs, err)
	}
	// A request written before requests named a partition (null): when no
	// partition holds its letter, any relay finishes it as missing.
	if err := b.Store.Session().Session.Query(`INSERT INTO relay_requests (consumer, `+requestColumns+`)
		VALUES (?, 40, ?, ?, ?, ?, 0, '', null)`, relay.Consumer, gocqlUUID(uuid.New()), relay.OpReplay, now,
		relay.RequestPending).WithContext(c).Exec(); err != nil {
		t.Fatal(err)
	}
	if qs, err := l.Requests(b1); err != nil || len(qs) != 2 || qs[1].Position != 40 {
		t.Errorf("Requests of B = %v, %v; want its own and the older request on a vanished letter", qs, err)
	}

	// A whole relay (a fence without a shard) sees every shard's letters
	// and keeps its own apart; A's next relay moves A's letters from there.
	whole := store.WithFence(c, store.Fence{Lease: relay.Consumer, Epoch: 1})
	if blocked, err := l.Blocked(whole); err != nil || len(blocked) != 1 || blocked[aggB] != 1 {
		t.Fatalf("Blocked(whole) = %v, %v; want B's letter", blocked, err)
	}
	aggA2 := idIn(shA.Index, count)
	if err := l.Record(whole, []relay.DeadLetter{letter(30, aggA2)}); err != nil {
		t.Fatalf("Record by the whole relay: %v", err)
	}
	a3 := fence(shA, 3)
	if blocked, err := l.Blocked(a3); err != nil || len(blocked) != 1 || blocked[aggA2] != 1 {
		t.Fatalf("Blocked(A at 3) = %v, %v; want the letter the whole relay left of A's aggregate", blocked, err)
	}
	if ls, err := l.OfAggregate(c, aggA2); err != nil || len(ls) != 1 {
		t.Errorf("OfAggregate = %v, %v; want the one letter, moved, not copied", ls, err)
	}
	if err := l.Remove(a3, 30); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get(c, 30); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Get(30) after A's relay removed it = %v, want relay.ErrNotFound", err)
	}
}

// TestShardRanges: for every valid count the shards' token ranges tile the
// ring in order, and the first and last token of each fall in that shard;
// the index shards of a worker shard cover exactly its range.
func TestShardRanges(t *testing.T) {
	for count := 1; count <= MaxShards; count *= 2 {
		if !validShards(count) {
			t.Fatalf("validShards(%d) = false", count)
		}
		prev := int64(minToken)
		for i := range count {
			r := tokenRangeOf(i, count)
			if r.lo != prev || r.hi <= r.lo {
				t.Fatalf("shard %d of %d is (%d, %d], after %d", i, count, r.lo, r.hi, prev)
			}
			if first, last := shardOfToken(r.lo+1, count), shardOfToken(r.hi, count); first != i || last != i {
				t.Fatalf("shard %d of %d: its tokens %d and %d are in shards %d and %d", i, count, r.lo+1, r.hi, first, last)
			}
			sub := &subscription{shard: store.Shard{Index: i, Count: count}}
			if count == 1 {
				sub.shard = store.Whole
			}
			idx := sub.indexShards()
			if lo, hi := touchShardOf(r.lo+1), touchShardOf(r.hi); idx[0] != lo || idx[len(idx)-1] != hi {
				t.Fatalf("shard %d of %d reads index shards %v, its range spans %d..%d", i, count, idx, lo, hi)
			}
			prev = r.hi
		}
		if prev != maxToken {
			t.Fatalf("the %d shards end at %d", count, prev)
		}
	}
	for _, n := range []int{0, 3, 48, 512} {
		if validShards(n) {
			t.Errorf("validShards(%d) = true", n)
		}
	}
}

// TestDeliveryTurns: the shards of one consumer in one process deliver at
// most FeedOptions.Deliveries batches at once, and every event still
// arrives, in order; for each of two consumers subscribed side by side.
func TestDeliveryTurns(t *testing.T) {
	const count, turns = 8, 2
	feed := testFeed
	feed.Deliveries = turns
	s := openWith(t, withFeed(withShards(testConfig(t), count), feed), Options{})

	var (
		mu              sync.Mutex
		inFlight, most  = map[string]int{}, map[string]int{}
		batches, events = map[string]int{}, map[string]int{}
	)
	handler := func(consumer string, c *orderedCollector) store.Handler {
		return func(ctx context.Context, evs []store.Event) error {
			mu.Lock()
			inFlight[consumer]++
			most[consumer] = max(most[consumer], inFlight[consumer])
			batches[consumer]++
			events[consumer] += len(evs)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond) // a batch's writes take a while: the other shards queue up
			mu.Lock()
			inFlight[consumer]--
			mu.Unlock()
			return c.handle(ctx, evs)
		}
	}
	want := make([]map[uuid.UUID]int64, count)
	for i := range want {
		want[i] = map[uuid.UUID]int64{}
	}
	cols := map[string][]*orderedCollector{}
	for _, consumer := range []string{"turns-a", "turns-b"} {
		for i := range count {
			sh := store.Shard{Index: i, Count: count}
			c := newOrdered(t)
			cols[consumer] = append(cols[consumer], c)
			subscribeFenced(t, s, consumer, fenceOf(t, s, consumer, sh, "a"), handler(consumer, c))
		}
	}
	var g errgroup.Group
	g.SetLimit(16)
	var wmu sync.Mutex
	for range 160 {
		g.Go(func() error {
			id := uuid.Must(uuid.NewV7())
			if err := s.Append(ctxFor(t), id, 0, []store.Event{event(id, 1)}); err != nil {
				return err
			}
			if err := s.Append(ctxFor(t), id, 1, []store.Event{event(id, 2)}); err != nil {
				return err
			}
			wmu.Lock()
			want[shardOf(id, count)][id] = 2
			wmu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, consumer := range []string{"turns-a", "turns-b"} {
		for i, c := range cols[consumer] {
			c.waitFor(t, want[i], 60*time.Second)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, consumer := range []string{"turns-a", "turns-b"} {
		if most[consumer] > turns {
			t.Errorf("%s: %d batches handled at once over %d shards; want at most %d", consumer, most[consumer], count, turns)
		}
		t.Logf("%s: %d events in %d batches, at most %d at once", consumer, events[consumer], batches[consumer], most[consumer])
	}
}
