package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// subscriber runs Subscribe for one consumer in the background and checks,
// batch by batch, the order the port promises: within a batch an
// aggregate's events in sequence order, and never the first sight of event
// n before n−1 was handed.
type subscriber struct {
	t        *testing.T
	consumer string
	cancel   context.CancelFunc
	done     chan error

	mu      sync.Mutex
	seen    map[uuid.UUID]store.Event // first sight of each event id
	top     map[uuid.UUID]int64       // highest sequence handed per aggregate
	batches int
	changed chan struct{} // closed and replaced at every batch
}

// subscribe starts consumer on s's feed. fail, when set, is asked before
// each batch is acknowledged and may refuse it with an error.
func subscribe(t *testing.T, s store.Store, consumer string, fail func(batch int) error) *subscriber {
	return resubscribe(t, s, nil, consumer, fail)
}

// resubscribe is subscribe for a consumer that ran before as prev (nil:
// never), whose acknowledged sequences the order check starts from.
func resubscribe(t *testing.T, s store.Store, prev *subscriber, consumer string, fail func(batch int) error) *subscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(testContext(t))
	sub := &subscriber{t: t, consumer: consumer, cancel: cancel, done: make(chan error, 1),
		seen: map[uuid.UUID]store.Event{}, top: map[uuid.UUID]int64{}, changed: make(chan struct{})}
	if prev != nil {
		prev.mu.Lock()
		maps.Copy(sub.top, prev.top)
		prev.mu.Unlock()
	}
	f := as[store.Feed](t, s)
	go func() { sub.done <- f.Subscribe(ctx, consumer, sub.handle(fail)) }()
	t.Cleanup(func() { sub.stop() })
	return sub
}

func (sub *subscriber) handle(fail func(int) error) store.Handler {
	return func(_ context.Context, evs []store.Event) error {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		if len(evs) == 0 {
			sub.t.Errorf("%s: handed an empty batch", sub.consumer)
		}
		inBatch := map[uuid.UUID]int64{} // last sequence of each aggregate in this batch
		reach := map[uuid.UUID]int64{}   // highest sequence handed, this batch included
		for _, e := range evs {
			if prev, ok := inBatch[e.AggregateID]; ok && e.Sequence <= prev {
				sub.t.Errorf("%s: aggregate %s: sequence %d after %d in one batch", sub.consumer, e.AggregateID, e.Sequence, prev)
			}
			inBatch[e.AggregateID] = e.Sequence
			top, ok := reach[e.AggregateID]
			if !ok {
				top = sub.top[e.AggregateID]
			}
			if e.Sequence > top+1 {
				sub.t.Errorf("%s: aggregate %s: sequence %d handed before %d", sub.consumer, e.AggregateID, e.Sequence, top+1)
			}
			reach[e.AggregateID] = max(top, e.Sequence)
		}
		sub.batches++
		if fail != nil {
			if err := fail(sub.batches); err != nil {
				return err
			}
		}
		for _, e := range evs {
			sub.top[e.AggregateID] = max(sub.top[e.AggregateID], e.Sequence)
			if _, ok := sub.seen[e.ID]; !ok {
				sub.seen[e.ID] = e
			}
		}
		close(sub.changed)
		sub.changed = make(chan struct{})
		return nil
	}
}

// waitFor waits until every event of want was handed and acknowledged, and
// returns the handed copies in want's order.
func (sub *subscriber) waitFor(want []store.Event) []store.Event {
	sub.t.Helper()
	deadline := time.After(guard)
	for {
		sub.mu.Lock()
		missing := 0
		for _, e := range want {
			if _, ok := sub.seen[e.ID]; !ok {
				missing++
			}
		}
		changed := sub.changed
		got := make([]store.Event, 0, len(want))
		if missing == 0 {
			for _, e := range want {
				got = append(got, sub.seen[e.ID])
			}
		}
		sub.mu.Unlock()
		if missing == 0 {
			return got
		}
		select {
		case <-changed:
		case err := <-sub.done:
			sub.done <- err
			sub.t.Fatalf("%s: Subscribe returned %v with %d of %d events not handed", sub.consumer, err, missing, len(want))
		case <-deadline:
			sub.t.Fatalf("%s: %d of %d events not handed within %s", sub.consumer, missing, len(want), guard)
		}
	}
}

// handedAny reports whether any of evs was handed.
func (sub *subscriber) handedAny(evs []store.Event) bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	for _, e := range evs {
		if _, ok := sub.seen[e.ID]; ok {
			return true
		}
	}
	return false
}

// stop ends the subscription and returns what Subscribe returned.
func (sub *subscriber) stop() error {
	sub.cancel()
	select {
	case err := <-sub.done:
		sub.done <- err // for a second stop
		return err
	case <-time.After(guard):
		sub.t.Errorf("%s: Subscribe did not return within %s of its ctx ending", sub.consumer, guard)
		return nil
	}
}

// result waits for Subscribe to return on its own.
func (sub *subscriber) result() error {
	sub.t.Helper()
	select {
	case err := <-sub.done:
		sub.done <- err
		return err
	case <-time.After(guard):
		sub.t.Fatalf("%s: Subscribe did not return within %s", sub.consumer, guard)
		return nil
	}
}

// appendMany appends, from several goroutines at once, n appends of 1 to 3
// events spread over aggs aggregates each, and returns every event in
// aggregate, then sequence, order.
func appendMany(t *testing.T, s store.Store, writers, aggs, n int) []store.Event {
	t.Helper()
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		all []store.Event
	)
	for w := range writers {
		wg.Go(func() {
			ids := make([]uuid.UUID, aggs)
			versions := make([]int64, aggs)
			for k := range ids {
				ids[k] = uuid.Must(uuid.NewV7())
			}
			var mine []store.Event
			for i := range n {
				k, size := i%aggs, (i+w)%3+1
				evs := widgets(ids[k], versions[k], size)
				if err := s.Append(testContext(t), ids[k], versions[k], evs); err != nil {
					t.Errorf("writer %d: Append: %v", w, err)
					return
				}
				versions[k] += int64(size)
				mine = append(mine, evs...)
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	slices.SortStableFunc(all, func(a, b store.Event) int {
		if c := slices.Compare(a.AggregateID[:], b.AggregateID[:]); c != 0 {
			return c
		}
		return int(a.Sequence - b.Sequence)
	})
	return all
}

// testSubscribeComplete: a consumer subscribed while writers append, and
// one that subscribes after them, are each handed every event, equal to
// what was appended, each aggregate's in order without gaps.
func testSubscribeComplete(t *testing.T, b backend) {
	s := b.open(t, nil)
	live := subscribe(t, s, "live", nil)
	want := appendMany(t, s, 8, 3, 12)
	b.checkEvents(t, live.waitFor(want), want)
	late := subscribe(t, s, "late", nil)
	b.checkEvents(t, late.waitFor(want), want)
	for _, sub := range []*subscriber{live, late} {
		if err := sub.stop(); err != nil {
			t.Errorf("%s: Subscribe after its ctx ended: %v, want nil", sub.consumer, err)
		}
	}
}

// testSubscribeResume: a consumer that stopped cleanly and subscribes
// again is handed what was committed since, and nothing it had handled.
func testSubscribeResume(t *testing.T, b backend) {
	s := b.open(t, nil)
	first := appendMany(t, s, 2, 2, 4)
	sub := subscribe(t, s, "resumer", nil)
	sub.waitFor(first)
	if err := sub.stop(); err != nil {
		t.Fatalf("Subscribe after its ctx ended: %v, want nil", err)
	}

	second := appendMany(t, s, 2, 2, 4)
	again := resubscribe(t, s, sub, "resumer", nil)
	b.checkEvents(t, again.waitFor(second), second)
	if again.handedAny(first) {
		t.Error("a clean restart handed events the consumer had acknowledged before it stopped")
	}
	// An aggregate that moves on after the restart continues where it was.
	last := first[len(first)-1]
	more := widgets(last.AggregateID, last.Sequence, 2)
	mustAppend(t, s, last.AggregateID, last.Sequence, more)
	b.checkEvents(t, again.waitFor(more), more)
}

// testSubscribeIndependent: consumers keep their own progress: one that
// has handled everything does not move another on.
func testSubscribeIndependent(t *testing.T, b backend) {
	s := b.open(t, nil)
	want := appendMany(t, s, 2, 2, 3)
	a := subscribe(t, s, "a", nil)
	a.waitFor(want)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	other := subscribe(t, s, "b", nil)
	b.checkEvents(t, other.waitFor(want), want)
}

var errRefused = errors.New("storetest: the handler refused the batch")

// testSubscribeHandlerError: a Handler's error ends Subscribe with that
// error, and the refused events are handed again to the next subscription.
func testSubscribeHandlerError(t *testing.T, b backend) {
	s := b.open(t, nil)
	want := appendMany(t, s, 1, 3, 6)
	sub := subscribe(t, s, "refuser", func(int) error { return errRefused })
	if err := sub.result(); !errors.Is(err, errRefused) {
		t.Fatalf("Subscribe with a failing handler: %v, want it to wrap the handler's error", err)
	}
	if sub.handedAny(want) {
		t.Fatal("the subscriber recorded events it refused") // the suite's own bookkeeping
	}
	again := resubscribe(t, s, sub, "refuser", nil)
	b.checkEvents(t, again.waitFor(want), want)
}

// testSubscribeUpcast: the feed hands events upcast, like Load.
func testSubscribeUpcast(t *testing.T, b backend) {
	var up store.Upcasters
	up.Register("WidgetMade", 1, func(e store.Event) (json.RawMessage, error) {
		return json.RawMessage(fmt.Sprintf(`{"seq":1,"colour":"grey","was":%s}`, e.Data)), nil
	})
	s := b.open(t, &up)
	id := uuid.Must(uuid.NewV7())
	evs := widgets(id, 0, 2)
	mustAppend(t, s, id, 0, evs)
	got := subscribe(t, s, "upcast", nil).waitFor(evs)
	if got[0].SchemaVersion != 2 || !jsonEqual(got[0].Data, []byte(fmt.Sprintf(`{"seq":1,"colour":"grey","was":%s}`, evs[0].Data))) {
		t.Errorf("first event handed as v%d %s, want the upcast v2", got[0].SchemaVersion, got[0].Data)
	}
	b.checkEvents(t, got[1:], evs[1:])
}

// testSubscribeLag: before a consumer runs, its lag counts every event (or
// is unknown); once it has handled them all, the lag is measured as zero.
func testSubscribeLag(t *testing.T, b backend) {
	s := b.open(t, nil)
	f := as[store.Feed](t, s)
	want := appendMany(t, s, 1, 2, 4)
	lag, err := f.Lag(testContext(t), "lagger")
	switch {
	case err != nil:
		t.Fatalf("Lag before any subscription: %v", err)
	case lag.Known && lag.Events != int64(len(want)):
		t.Errorf("Lag before any subscription = %d events, want %d", lag.Events, len(want))
	case lag.Known && lag.Age <= 0:
		t.Errorf("Lag before any subscription has age %v, want > 0", lag.Age)
	}

	sub := subscribe(t, s, "lagger", nil)
	sub.waitFor(want)
	deadline := time.Now().Add(guard)
	for {
		lag, err = f.Lag(testContext(t), "lagger")
		if err != nil {
			t.Fatalf("Lag: %v", err)
		}
		if lag.Known && lag.Events == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Lag after every event was handled = %+v, want known and 0 within %s", lag, guard)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lag.Age != 0 {
		t.Errorf("Lag of a caught-up consumer has age %v, want 0", lag.Age)
	}
	if err := sub.stop(); err != nil {
		t.Fatal(err)
	}
	if lag, err = f.Lag(testContext(t), "lagger"); err != nil || (lag.Known && lag.Events != 0) {
		t.Errorf("Lag after a clean stop = %+v, %v; want 0 events or unknown", lag, err)
	}
}

// testSubscribeBlind: events that the fast path never sees, an
// aggregate's last one included, are still handed, by the slow path.
func testSubscribeBlind(t *testing.T, b backend) {
	s := b.open(t, nil)
	sub := subscribe(t, s, "blind", nil)
	seen := appendMany(t, s, 1, 1, 2)
	sub.waitFor(seen)

	blind := b.caps.Blind(t, s)
	last := seen[len(seen)-1]
	unseen := widgets(last.AggregateID, last.Sequence, 2) // the aggregate's last events
	if err := blind.Append(testContext(t), last.AggregateID, last.Sequence, unseen); err != nil {
		t.Fatalf("blind Append: %v", err)
	}
	id := uuid.Must(uuid.NewV7())
	fresh := widgets(id, 0, 3) // a whole aggregate the fast path never saw
	if err := blind.Append(testContext(t), id, 0, fresh); err != nil {
		t.Fatalf("blind Append: %v", err)
	}
	minted := uuid.Must(uuid.NewV7())
	mintedEvs := widgets(minted, 0, 2) // minted, and never appended to
	if err := blind.Mint(testContext(t), minted, mintedEvs); err != nil {
		t.Fatalf("blind Mint: %v", err)
	}
	b.checkEvents(t, sub.waitFor(unseen), unseen)
	b.checkEvents(t, sub.waitFor(fresh), fresh)
	b.checkEvents(t, sub.waitFor(mintedEvs), mintedEvs)
}
