package cql

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"go.uber.org/zap"
)

// hintBucket is the span of writer clock time in one feed_hints partition.
// Every instance must use the same value, so it is not an option.
const hintBucket = 10 * time.Second

// The statements on feed_hints.
const (
	hintWriteCQL = `INSERT INTO feed_hints (bucket, at, aggregate_id, version) VALUES (?, ?, ?, ?) USING TTL ?`
	hintReadCQL  = `SELECT at, aggregate_id, version FROM feed_hints WHERE bucket = ? AND at > minTimeuuid(?)`
)

// hintWriters is how many goroutines write hints; each writes a batch per
// bucket for everything queued meanwhile.
const hintWriters = 2

// hintBatch caps the hints of one write.
const hintBatch = 100

func bucketOf(t time.Time) int64 { return t.UnixMilli() / hintBucket.Milliseconds() }

// hint says that an append brought aggregate id to version.
type hint struct {
	at      gocql.UUID // a time UUID of when the append returned
	id      uuid.UUID
	version int64
}

// hinter writes hints after appends, on Cassandra, off the append's path:
// Append only queues, never waits, and a full queue drops the hint.
type hinter struct {
	s       *Store
	queue   chan hint
	ttl     int // seconds
	dropped atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newHinter(s *Store) *hinter {
	w := &hinter{
		s:     s,
		queue: make(chan hint, s.feed.HintQueue),
		ttl:   int((s.feed.HintTTL + time.Second - 1) / time.Second),
		stop:  make(chan struct{}),
	}
	for range hintWriters {
		w.wg.Go(w.run)
	}
	return w
}

// add queues a hint that aggregate id is at version now.
func (w *hinter) add(id uuid.UUID, version int64) {
	select {
	case w.queue <- hint{at: gocql.TimeUUID(), id: id, version: version}:
	default:
		w.dropped.Add(1)
	}
}

// close writes what is queued, for at most a second, and stops the
// writers. Hints still queued then are dropped.
func (w *hinter) close() {
	close(w.stop)
	w.wg.Wait()
}

func (w *hinter) run() {
	for {
		select {
		case h := <-w.queue:
			w.write(w.more([]hint{h}))
		case <-w.stop:
			w.flush()
			return
		}
	}
}

// flush writes what is still queued when the store closes, for at most a
// second, and counts the rest as dropped.
func (w *hinter) flush() {
	deadline := time.Now().Add(time.Second)
	for {
		select {
		case h := <-w.queue:
			if time.Now().After(deadline) {
				w.dropped.Add(1)
				continue
			}
			w.write(w.more([]hint{h}))
		default:
			return
		}
	}
}

// more adds to hs what else is queued, up to hintBatch hints.
func (w *hinter) more(hs []hint) []hint {
	for len(hs) < hintBatch {
		select {
		case h := <-w.queue:
			hs = append(hs, h)
		default:
			return hs
		}
	}
	return hs
}

// write stores hs, one unlogged batch per bucket: a single-partition
// batch is one write on the replicas.
func (w *hinter) write(hs []hint) {
	byBucket := make(map[int64][]hint)
	for _, h := range hs {
		b := bucketOf(h.at.Time())
		byBucket[b] = append(byBucket[b], h)
	}
	for b, hs := range byBucket {
		ctx, cancel := context.WithTimeout(context.Background(), w.s.cfg.Timeout)
		batch := w.s.sess.Session.Batch(gocql.UnloggedBatch).WithContext(ctx)
		for _, h := range hs {
			batch.Query(hintWriteCQL, b, h.at, h.id, h.version, w.ttl)
		}
		err := batch.Exec()
		cancel()
		if err != nil {
			w.dropped.Add(int64(len(hs)))
			if !w.s.closed.Load() {
				w.s.log.Warn("hints not written; the reconciliation pass will find the appends",
					zap.Int("hints", len(hs)), zap.Error(err))
			}
		}
	}
}

// hintHub reads feed_hints for every subscription of this process at
// once, every HintPoll, and hands each hint to the subscriptions whose
// shard holds its aggregate: one read per poll however many shards (and
// consumers) the process holds, where a reader per subscription would
// make 128 with 64 shards of the relay and the projector. It runs while a
// subscription does.
type hintHub struct {
	s     *Store
	mu    sync.Mutex
	boxes map[*subscription]*hintBox
	stop  context.CancelFunc // the running poller's; nil when none runs
	lost  atomic.Int64       // hints a full box dropped
}

// hintBox holds the hints waiting for one subscription, at most HintQueue:
// beyond it a hint is dropped (the recent pass finds its append).
type hintBox struct {
	mu    sync.Mutex
	reqs  []request
	ready chan struct{} // has a token while reqs is not empty
}

func (b *hintBox) put(r request, limit int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.reqs) >= limit {
		return false
	}
	b.reqs = append(b.reqs, r)
	select {
	case b.ready <- struct{}{}:
	default:
	}
	return true
}

func (b *hintBox) take() []request {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.reqs
	b.reqs = nil
	return out
}

// join registers sub, starting the poller if none runs, and returns the
// box its hints arrive in.
func (h *hintHub) join(sub *subscription) *hintBox {
	h.mu.Lock()
	defer h.mu.Unlock()
	box := &hintBox{ready: make(chan struct{}, 1)}
	if h.boxes == nil {
		h.boxes = make(map[*subscription]*hintBox)
	}
	h.boxes[sub] = box
	if h.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		h.stop = cancel
		go func() {
			select {
			case <-h.s.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		go h.poll(ctx)
	}
	return box
}

// leave unregisters sub, stopping the poller after the last one.
func (h *hintHub) leave(sub *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.boxes, sub)
	if len(h.boxes) == 0 && h.stop != nil {
		h.stop()
		h.stop = nil
	}
}

// dispatch hands r to every subscription whose shard holds its aggregate.
func (h *hintHub) dispatch(r request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub, box := range h.boxes {
		if sub.owns(r.id) && !box.put(r, h.s.feed.HintQueue) {
			h.lost.Add(1)
		}
	}
}

// poll reads the hints written since it started, every HintPoll, and
// dispatches each new one, until ctx ends. Each poll reads again from
// HintOverlap before the previous one; the hints seen already are
// remembered until they fall out of that overlap.
func (h *hintHub) poll(ctx context.Context) {
	opt := h.s.feed
	var (
		seen = make(map[gocql.UUID]struct{})
		prev = time.Now().Add(-opt.HintOverlap) // each subscription's own first read covers what came before
		tick = time.NewTicker(opt.HintPoll)
	)
	defer tick.Stop()
	for {
		now := time.Now()
		from := prev.Add(-opt.HintOverlap)
		if err := h.s.readHints(ctx, from, now, seen, h.dispatch); err != nil {
			if ctx.Err() != nil {
				return
			}
			// Hints are a shortcut: the pass covers for them meanwhile.
			h.s.log.Warn("hints not read", zap.Error(err))
		} else {
			prev = now
		}
		for at := range seen {
			if at.Time().Before(from) {
				delete(seen, at)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pollHints feeds the delivery core with the hints of the subscription's
// shard, which the process's hint hub reads, until ctx ends. It reads the
// last two HintOverlaps once itself first, for the appends just before it
// joined the hub, which the hub may have read already.
func (sub *subscription) pollHints(ctx context.Context) error {
	hub := &sub.s.hintsIn
	box := hub.join(sub)
	defer hub.leave(sub)
	send := func(r request) {
		if sub.owns(r.id) {
			_ = sub.send(ctx, r) // fails only when ctx ends
		}
	}
	now := time.Now()
	if err := sub.s.readHints(ctx, now.Add(-2*sub.opt.HintOverlap), now, map[gocql.UUID]struct{}{}, send); err != nil && ctx.Err() == nil {
		sub.log.Warn("hints not read", zap.Error(err))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-box.ready:
		}
		for _, r := range box.take() {
			if err := sub.send(ctx, r); err != nil {
				return nil // ctx ended
			}
		}
	}
}

// readHints hands to each the hints written after from that are not in
// seen, and adds them to seen.
func (s *Store) readHints(ctx context.Context, from, now time.Time, seen map[gocql.UUID]struct{}, each func(request)) error {
	for b := bucketOf(from); b <= bucketOf(now.Add(s.feed.HintOverlap)); b++ {
		iter := s.sess.Session.Query(hintReadCQL, b, from).WithContext(ctx).Idempotent(true).Iter()
		var (
			at      gocql.UUID
			id      uuid.UUID
			version int64
		)
		for iter.Scan(&at, &id, &version) {
			if _, ok := seen[at]; ok {
				continue
			}
			seen[at] = struct{}{}
			each(request{id: id, version: version, known: -1})
			if ctx.Err() != nil {
				break
			}
		}
		if err := iter.Close(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}
