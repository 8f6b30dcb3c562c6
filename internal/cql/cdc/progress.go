package cdc

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"
	"go.uber.org/zap"
)

// saveConcurrency bounds the progress writes of one flush in flight. The
// library's table-backed manager allows 100; a flush of thousands of
// streams should not take all of them from the reads it also serves.
const saveConcurrency = 32

// saver is the reader's ProgressManager. It passes reads, generations and
// the application's start time to the library's table-backed manager, but
// keeps each stream's progress in memory: the library reports progress
// after every change and, through Empty, after every empty poll of every
// stream, and writing each report would load an idle cluster with a write
// per stream per poll. flush writes the latest mark of each stream that
// moved since the last flush.
//
// A mark is only ever moved past changes the handler returned for, so what
// is written is never ahead of what was handled; it may be behind, by up
// to a flush period, which a restart reads again.
type saver struct {
	scyllacdc.ProgressManagerWithStartTime
	margin time.Duration // how far behind its mark a stream's progress is written

	mu      sync.Mutex
	pending map[streamKey]mark
}

// streamKey names a stream's progress row.
type streamKey struct {
	gen    int64 // the generation's start, in unix nanoseconds
	table  string
	stream string
}

// mark is a stream's progress not yet written.
type mark struct {
	gen    time.Time
	table  string
	stream scyllacdc.StreamID
	at     gocql.UUID
}

func newSaver(table scyllacdc.ProgressManagerWithStartTime, margin time.Duration) *saver {
	return &saver{ProgressManagerWithStartTime: table, margin: margin, pending: map[streamKey]mark{}}
}

// SaveProgress records p for the stream in memory. It never fails, and
// never moves a stream's mark back.
func (s *saver) SaveProgress(_ context.Context, gen time.Time, table string, stream scyllacdc.StreamID, p scyllacdc.Progress) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.record(mark{gen: gen, table: table, stream: stream, at: p.LastProcessedRecordTime})
	return nil
}

// record keeps m unless a later mark of its stream is pending. s.mu is
// held.
func (s *saver) record(m mark) {
	k := streamKey{gen: m.gen.UnixNano(), table: m.table, stream: string(m.stream)}
	if old, ok := s.pending[k]; ok && scyllacdc.CompareTimeUUID(old.at, m.at) >= 0 {
		return
	}
	s.pending[k] = m
}

// StartGeneration saves that the reader moved to generation gen, and
// forgets the marks of older generations: the library starts gen only
// when every stream of the previous one is done, and a restart starts from
// the saved generation, so their progress is never read again.
func (s *saver) StartGeneration(ctx context.Context, gen time.Time) error {
	if err := s.ProgressManagerWithStartTime.StartGeneration(ctx, gen); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, m := range s.pending {
		if m.gen.Before(gen) {
			delete(s.pending, k)
		}
	}
	return nil
}

// flush writes every pending mark, up to saveConcurrency at a time. A mark
// whose write failed stays pending, unless a later one came meanwhile, for
// the next flush. It returns an error naming how many failed and the
// first failure.
func (s *saver) flush(ctx context.Context) error {
	s.mu.Lock()
	batch := s.pending
	s.pending = make(map[streamKey]mark, len(batch))
	s.mu.Unlock()

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []mark
		first  error
		slots  = make(chan struct{}, saveConcurrency)
	)
	for _, m := range batch {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			err := s.ProgressManagerWithStartTime.SaveProgress(ctx, m.gen, m.table, m.stream, scyllacdc.Progress{LastProcessedRecordTime: s.behind(m.at)})
			if err != nil {
				mu.Lock()
				failed = append(failed, m)
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) == 0 {
		return nil
	}
	s.mu.Lock()
	for _, m := range failed {
		s.record(m)
	}
	s.mu.Unlock()
	return fmt.Errorf("cdc: save the progress of %d of %d streams, the first: %w", len(failed), len(batch), first)
}

// behind returns the point margin before at, which is what is written for
// a mark at at: a restart reads the margin again. (The library starts a
// generation's streams no earlier than the generation, whatever is saved.)
func (s *saver) behind(at gocql.UUID) gocql.UUID {
	if s.margin <= 0 {
		return at
	}
	return gocql.MinTimeUUID(at.Time().Add(-s.margin))
}

// run flushes every period until ctx ends. A failed flush is logged and
// retried at the next period: progress lagging behind costs a longer
// re-read after a restart, not a lost change.
func (s *saver) run(ctx context.Context, every time.Duration, log *zap.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.flush(ctx); err != nil && ctx.Err() == nil {
				log.Warn("cdc: save progress; retrying at the next period", zap.Error(err))
			}
		}
	}
}

var _ scyllacdc.ProgressManagerWithStartTime = (*saver)(nil)
