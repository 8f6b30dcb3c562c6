package cql

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// request asks the delivery core to bring the consumer's aggregate id up
// to at least version. Every path (CDC, hints, the reconciliation pass)
// speaks only this.
type request struct {
	id      uuid.UUID
	version int64
	// events, if not nil, are the aggregate's events up to version, in
	// order, as the fast path saw them; used when they start right after
	// what the consumer has handled, which saves a read.
	events []store.Event
	// known is the consumer's progress on id as the caller read it from
	// feed_progress (or 0 for an aggregate the hand-off saw created), -1
	// when it did not. It can be behind, never ahead.
	known int64
	// pass, if not nil, is the reconciliation pass that found id behind;
	// it is told what was delivered, for the lag.
	pass *pass
	// done, if not nil, marks the end of a pass: the core closes it once
	// every request sent before it is handled.
	done chan struct{}
	// retry marks the retry of a parked aggregate (see gaps.go).
	retry bool
	// acks, if any, are closed once the core has handled the request: its
	// events handed and the progress saved, or the aggregate parked at a
	// hole after handing what came before it. The CDC reader saves its
	// progress past a change only then.
	acks []chan struct{}
}

// due is one aggregate of a batch: the events to hand and what the
// consumer had handled before them.
type due struct {
	req     request
	handled int64
	events  []store.Event
	gap     bool // events stop short of req.version: the rest is not visible yet
	guessed bool // handled is fill's guess, not read (FeedOptions.Redeliverable)
}

// deliver is the delivery core: it takes requests in batches, finds for
// each aggregate the events after what the consumer has handled, hands
// them to the Handler and saves the progress. It alone calls the Handler
// and touches sub.handled.
//
// A batch starts when the consumer has a delivery turn free in this
// process (FeedOptions.Deliveries), and takes what queued up meanwhile.
func (sub *subscription) deliver(ctx context.Context) error {
	turns := sub.s.deliveryTurns(sub.consumer)
	for {
		var first request
		select {
		case <-ctx.Done():
			return nil
		case first = <-sub.work:
		}
		select {
		case <-ctx.Done():
			return nil
		case turns <- struct{}{}:
		}
		reqs, marks := sub.drain(first)
		err := sub.deliverBatch(ctx, reqs)
		<-turns
		if err != nil {
			return err
		}
		if ctx.Err() != nil || sub.ctx.Err() != nil {
			// Stopped, perhaps midway: nothing is acknowledged, so no
			// cursor, watermark or CDC progress moves past this batch.
			return nil
		}
		for _, r := range reqs {
			for _, a := range r.acks {
				close(a)
			}
		}
		for _, m := range marks {
			if m.pass != nil {
				m.pass.parkedSince = sub.oldestParking()
			}
			close(m.done)
		}
	}
}

// deliveryTurns returns the turns of consumer's deliveries in this
// process: a channel of FeedOptions.Deliveries places, one taken by each
// batch being delivered.
func (s *Store) deliveryTurns(consumer string) chan struct{} {
	c, _ := s.turns.LoadOrStore(consumer, make(chan struct{}, s.feed.Deliveries))
	return c.(chan struct{})
}

// drain takes first and whatever else is queued, up to BatchSize
// aggregates, merging the requests for one aggregate. It stops at the end
// of a pass, whose mark it returns, so that the pass learns when its
// requests are done.
func (sub *subscription) drain(first request) ([]request, []request) {
	var (
		reqs  []request
		marks []request
		index = make(map[uuid.UUID]int)
	)
	add := func(r request) bool {
		if r.done != nil {
			marks = append(marks, r)
			return false
		}
		i, ok := index[r.id]
		if !ok {
			index[r.id] = len(reqs)
			reqs = append(reqs, r)
			return len(reqs) < sub.opt.BatchSize
		}
		reqs[i] = merge(reqs[i], r)
		return true
	}
	if !add(first) {
		return reqs, marks
	}
	for {
		select {
		case r := <-sub.work:
			if !add(r) {
				return reqs, marks
			}
		default:
			return reqs, marks
		}
	}
}

// merge combines two requests for one aggregate: the higher version, the
// fast path's events when they join up, the higher known progress.
func merge(a, b request) request {
	if b.version == a.version && len(a.events) == 0 {
		a.events = b.events // the same append, as the fast path or the hand-off saw it
	}
	if b.version > a.version {
		a.version = b.version
		switch {
		case len(a.events) > 0 && len(b.events) > 0 && b.events[0].Sequence == a.events[len(a.events)-1].Sequence+1:
			a.events = append(a.events[:len(a.events):len(a.events)], b.events...)
		case len(a.events) > 0 && len(b.events) > 0 && b.events[0].Sequence <= a.events[0].Sequence:
			a.events = b.events
		default:
			a.events = nil // a load fills whatever lies between
		}
	}
	a.known = max(a.known, b.known)
	a.retry = a.retry || b.retry
	a.acks = append(a.acks[:len(a.acks):len(a.acks)], b.acks...)
	if a.pass == nil {
		a.pass = b.pass
	}
	return a
}

// deliverBatch brings every aggregate of reqs up to its requested version.
func (sub *subscription) deliverBatch(ctx context.Context, reqs []request) error {
	dues, err := sub.prepare(ctx, reqs)
	if err != nil || ctx.Err() != nil {
		return err
	}
	sub.settleParking(ctx, dues)
	// Hand the events in calls of at most BatchSize events; an
	// aggregate's events may span consecutive calls, in order.
	var (
		batch []store.Event
		upTo  = make(map[uuid.UUID]int64)
	)
	flush := func() error {
		// The subscriber's own context is asked too: a derived one learns
		// only later that it ended, and a caller's context may end by a
		// deadline that no timer has noticed yet (a lease that lapsed
		// while the process was paused).
		if len(batch) == 0 || ctx.Err() != nil || sub.ctx.Err() != nil {
			return nil
		}
		bctx := withBatchCheck(ctx) // one fence check for the handler's writes and the save
		if err := sub.h(bctx, batch); err != nil {
			if ctx.Err() != nil {
				return nil // stopped, not failed: the batch comes again
			}
			return fmt.Errorf("handler: %w", err)
		}
		if err := sub.saveProgress(bctx, upTo); err != nil {
			return err
		}
		for id, v := range upTo {
			sub.remember(id, v)
		}
		batch, upTo = nil, make(map[uuid.UUID]int64)
		return nil
	}
	for _, d := range dues {
		for _, e := range d.events {
			batch = append(batch, e)
			upTo[e.AggregateID] = e.Sequence
			if len(batch) >= sub.opt.BatchSize {
				if err := flush(); err != nil || ctx.Err() != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// prepare finds, for each request, what the consumer has handled and the
// events after it, reading progress and events concurrently.
func (sub *subscription) prepare(ctx context.Context, reqs []request) ([]due, error) {
	dues := make([]due, len(reqs))
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, sub.opt.Concurrency)
		mu   sync.Mutex
		fail error
	)
	for i, r := range reqs {
		dues[i] = due{req: r, handled: -1}
		if v, ok := sub.handled[r.id]; ok {
			dues[i].handled = v
		}
		dues[i].handled = max(dues[i].handled, r.known)
		if dues[i].handled >= r.version {
			continue // nothing new: the other path got there first
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(d *due) {
			defer func() { <-sem; wg.Done() }()
			if err := sub.fill(ctx, d); err != nil {
				mu.Lock()
				fail = err
				mu.Unlock()
			}
		}(&dues[i])
	}
	wg.Wait()
	if fail != nil {
		return nil, fail
	}
	for i := range dues {
		d := &dues[i]
		if d.handled >= 0 && !d.guessed {
			sub.remember(d.req.id, d.handled) // read from the table, or known
		}
		if p := d.req.pass; p != nil && len(d.events) > 0 {
			p.behind(d.events)
		}
	}
	return dues, nil
}

// fill reads what the consumer has handled of d's aggregate if that is not
// known, and sets d.events to the events after it: the fast path's, when
// they join up, or else those in the events table. A redeliverable
// consumer's progress on an aggregate at version 1 is taken as 0 unread
// (FeedOptions.Redeliverable).
func (sub *subscription) fill(ctx context.Context, d *due) error {
	if d.handled < 0 && d.req.version == 1 && sub.redeliverable {
		d.handled, d.guessed = 0, true
	}
	if d.handled < 0 {
		v, err := sub.readProgress(ctx, d.req.id)
		if err != nil {
			return err
		}
		d.handled = v
	}
	if d.handled >= d.req.version {
		return nil
	}
	// Whatever the source, only the events that follow what was handled
	// without a hole are handed (see gaps.go): a replica that missed a row
	// must not make the consumer skip it.
	if evs := d.req.events; len(evs) > 0 && evs[0].Sequence <= d.handled+1 {
		// The fast path's events reach back far enough: no read, unless
		// they have a hole.
		if run := contiguous(after(evs, d.handled), d.handled); reaches(run, d.handled, d.req.version) {
			d.events = run
			return nil
		}
	}
	evs, err := sub.load(ctx, d.req.id, d.handled)
	if err != nil {
		return fmt.Errorf("load %s after %d: %w", d.req.id, d.handled, err)
	}
	d.events = contiguous(evs, d.handled)
	d.gap = !reaches(d.events, d.handled, d.req.version)
	return nil
}

// remember records that the consumer has handled aggregate id up to
// version, in the bounded cache. When the cache is full a tenth of it goes,
// whichever entries the map yields first: they are read back when needed.
func (sub *subscription) remember(id uuid.UUID, version int64) {
	if v, ok := sub.handled[id]; ok && v >= version {
		return
	}
	if len(sub.handled) >= sub.opt.CacheSize {
		drop := max(1, sub.opt.CacheSize/10)
		for k := range sub.handled {
			if drop == 0 {
				break
			}
			delete(sub.handled, k)
			drop--
		}
	}
	sub.handled[id] = version
}

// pass is one reconciliation pass, as the delivery core reports it back:
// the events it found unhandled and the oldest of them, and, once its mark
// is closed, since when the longest-parked aggregate has waited (zero when
// none is parked).
type pass struct {
	events      int64
	oldest      time.Time
	parkedSince time.Time
}

// behind records that a pass request had evs still to deliver. Only the
// delivery core calls it; the pass reads the result after its mark closed.
func (p *pass) behind(evs []store.Event) {
	p.events += int64(len(evs))
	if ts := evs[0].Timestamp; p.oldest.IsZero() || ts.Before(p.oldest) {
		p.oldest = ts
	}
}
