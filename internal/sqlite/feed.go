package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// The backoff between tries to save a consumer's progress while the disk
// fails.
const (
	saveRetryInitial = 100 * time.Millisecond
	saveRetryMax     = 2 * time.Second
)

// Subscribe hands the feed to h from the consumer's saved position, in
// position order, in batches of up to Options.FeedBatch events, until ctx
// ends (it returns nil) or h, the store or its Close stops it (it returns
// the error; store.ErrClosed after Close).
//
// Positions are a global commit order (see ReadFeed), so tailing them is
// complete and keeps every aggregate's events in order without any help.
// Progress is saved by the writer goroutine, together with the appends it
// commits anyway: at most every Options.ProgressEvery, whether the
// consumer works through a backlog or has caught up (then once
// ProgressEvery after the last save, if nothing new came meanwhile), and
// when it stops. A crash can therefore hand again at most that much. A
// consumer that caught up does not save at once: at one command at a time
// that was a commit (and an fsync of events.db) of its own after every
// command's, which the next command's commit waited behind.
//
// A save that fails for the disk (store.ErrUnavailable) does not end the
// subscription: it is retried with capped backoff (saveRetryInitial to
// saveRetryMax), and nothing new is handed meanwhile; while the store's
// writes fail, progress is saved after every batch. So a storage fault
// makes a consumer pause, and hands again at most one batch if the
// subscription ends before the storage recovers.
//
// Only one subscription per consumer name may run in a Store at a time;
// a second one fails at once.
func (s *Store) Subscribe(ctx context.Context, consumer string, h store.Handler) (err error) {
	if consumer == "" || consumer == probeConsumer {
		return fmt.Errorf("sqlite: subscribe: consumer name %q is not allowed", consumer)
	}
	pos, err := s.savedProgress(ctx, consumer)
	if err != nil {
		return err
	}
	cur, err := s.track(consumer, pos)
	if err != nil {
		return err
	}
	defer s.untrack(consumer)

	saved, savedAt := pos, time.Now()
	save := func() error {
		if pos == saved {
			return nil
		}
		// Fenced: a holder whose lease was taken saves nothing; the check
		// and the commit are under the leases' lock.
		release, err := s.leases.hold(ctx, "save progress of "+consumer)
		if err != nil {
			return err
		}
		defer release()
		if err := s.saveProgress(consumer, pos); err != nil {
			return fmt.Errorf("sqlite: save progress of %s at %d: %w", consumer, pos, err)
		}
		saved, savedAt = pos, time.Now()
		return nil
	}
	// keep saves what h acknowledged before anything else is handed. A
	// save that fails for the disk is tried again, with capped backoff,
	// rather than ending the subscription: a restart would hand again
	// everything since the last save, and a supervisor restarting a
	// consumer that cannot save would have it publish the same events
	// again and again. It returns nil when ctx ends meanwhile.
	keep := func() error {
		err := save()
		if !errors.Is(err, store.ErrUnavailable) {
			return err
		}
		s.log.Warn("feed: cannot save a consumer's progress; it is handed nothing new until the progress is saved",
			zap.String("consumer", consumer), zap.Int64("position", pos), zap.Error(err))
		wait, tries := saveRetryInitial, 1
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-s.closing:
				return store.ErrClosed
			case <-time.After(wait):
			}
			wait = min(2*wait, saveRetryMax)
			tries++
			if err = save(); !errors.Is(err, store.ErrUnavailable) {
				if err == nil {
					s.log.Info("feed: progress saved again", zap.String("consumer", consumer),
						zap.Int64("position", pos), zap.Int("tries", tries))
				}
				return err
			}
		}
	}
	// Whatever ends the subscription, what h acknowledged is saved, so a
	// clean stop hands nothing twice.
	defer func() {
		if serr := save(); serr != nil && !errors.Is(serr, store.ErrClosed) {
			err = errors.Join(err, serr)
		}
		if ctx.Err() != nil && (err == nil || errors.Is(err, ctx.Err())) {
			err = nil
		}
	}()

	var timer *time.Timer // the save due while caught up
	for {
		wake := s.wakeChan() // before the query, so no commit goes unnoticed
		evs, err := s.feed(ctx, pos, s.feedBatch)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("sqlite: read feed of %s after %d: %w", consumer, pos, err)
		case len(evs) == 0:
			// Caught up: a good moment to save, since nothing waits, once
			// ProgressEvery has passed since the last save (or the
			// store's writes fail); until then a timer, if there is
			// anything to save.
			var due <-chan time.Time
			if pos != saved {
				if wait := s.progressEvery - time.Since(savedAt); wait > 0 && !s.health.Down() {
					if timer == nil {
						timer = time.NewTimer(wait)
						defer timer.Stop()
					} else {
						timer.Reset(wait) // since Go 1.23, no stale tick to drain
					}
					due = timer.C
				} else if err := keep(); err != nil || ctx.Err() != nil {
					return err
				}
			}
			select {
			case <-wake:
			case <-due:
				if err := keep(); err != nil || ctx.Err() != nil {
					return err
				}
			case <-ctx.Done():
				return nil
			case <-s.closing:
				return store.ErrClosed
			}
			continue
		}
		if err := h(ctx, evs); err != nil {
			return fmt.Errorf("sqlite: %s: handle events %d..%d: %w", consumer, evs[0].Position, evs[len(evs)-1].Position, err)
		}
		pos = evs[len(evs)-1].Position
		cur.Store(pos)
		// While the store's writes fail, every batch is saved before the
		// next is handed: if the subscription ends before the storage
		// recovers, at most this batch is handed again.
		if time.Since(savedAt) >= s.progressEvery || s.health.Down() {
			if err := keep(); err != nil || ctx.Err() != nil {
				return err
			}
		}
	}
}

// Lag counts the committed events after the consumer's position (the
// running subscription's, or the saved one) and the age of the first.
func (s *Store) Lag(ctx context.Context, consumer string) (store.Lag, error) {
	pos, ok := s.tracked(consumer)
	if !ok {
		var err error
		if pos, err = s.savedProgress(ctx, consumer); err != nil {
			return store.Lag{}, err
		}
	}
	head, err := s.Head(ctx)
	if err != nil {
		return store.Lag{}, err
	}
	lag := store.Lag{Known: true, Events: max(head-pos, 0), At: time.Now()}
	if lag.Events == 0 {
		return lag, nil
	}
	next, err := s.query(ctx, s.feedQ, pos, 1)
	if err != nil {
		return store.Lag{}, fmt.Errorf("sqlite: lag of %s: %w", consumer, err)
	}
	if len(next) > 0 {
		lag.Age = max(lag.At.Sub(next[0].Timestamp), 0)
	}
	return lag, nil
}

// savedProgress reads the consumer's saved position, 0 when it has none.
func (s *Store) savedProgress(ctx context.Context, consumer string) (int64, error) {
	if s.isClosed() {
		return 0, store.ErrClosed
	}
	var pos int64
	err := s.progressQ.QueryRowContext(ctx, consumer).Scan(&pos)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("sqlite: read progress of %s: %w", consumer, s.closedOr(err))
	}
	return pos, nil
}

// saveReq is a consumer's position waiting for the writer goroutine.
type saveReq struct {
	consumer string
	position int64
	done     chan error // buffered
}

// saveProgress has the writer save the consumer's position, in the next
// transaction it commits, and waits until it is durable.
func (s *Store) saveProgress(consumer string, position int64) error {
	r := &saveReq{consumer: consumer, position: position, done: make(chan error, 1)}
	select {
	case s.saves <- r:
	case <-s.closing:
		return store.ErrClosed
	}
	return s.reply(r.done)
}
