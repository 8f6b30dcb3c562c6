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

// pollHints reads the hints written since the subscription started, every
// HintPoll, and sends each new one to the delivery core. Each poll reads
// again from HintOverlap before the previous one; the hints seen already
// are remembered until they fall out of that overlap.
func (sub *subscription) pollHints(ctx context.Context) error {
	var (
		seen = make(map[gocql.UUID]struct{})
		prev = time.Now().Add(-sub.opt.HintOverlap) // the start pass covers what came before
		tick = time.NewTicker(sub.opt.HintPoll)
	)
	defer tick.Stop()
	for {
		now := time.Now()
		from := prev.Add(-sub.opt.HintOverlap)
		if err := sub.readHints(ctx, from, now, seen); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Hints are a shortcut: the pass covers for them meanwhile.
			sub.log.Warn("hints not read", zap.Error(err))
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
			return nil
		case <-tick.C:
		}
	}
}

// readHints sends the delivery core the hints written after from that are
// not in seen and name an aggregate of the subscription's shard, and adds
// them to seen.
func (sub *subscription) readHints(ctx context.Context, from, now time.Time, seen map[gocql.UUID]struct{}) error {
	for b := bucketOf(from); b <= bucketOf(now.Add(sub.opt.HintOverlap)); b++ {
		iter := sub.s.sess.Session.Query(hintReadCQL, b, from).WithContext(ctx).Idempotent(true).Iter()
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
			if !sub.owns(id) {
				continue // another shard's
			}
			if err := sub.send(ctx, request{id: id, version: version, known: -1}); err != nil {
				_ = iter.Close()
				return err
			}
		}
		if err := iter.Close(); err != nil {
			return err
		}
	}
	return nil
}
