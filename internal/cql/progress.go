package cql

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// The statements on feed_progress and feed_lag.
const (
	progressReadCQL = `SELECT version FROM feed_progress WHERE aggregate_id = ? AND consumer = ?`
	// USING TIMESTAMP <version>: of two writes for one aggregate and
	// consumer, the higher version wins, in whatever order they land. Two
	// subscriptions of one consumer that overlap for a moment (a failover)
	// cannot move progress back, and no LWT is needed.
	progressSaveCQL = `UPDATE feed_progress USING TIMESTAMP ? SET version = ? WHERE aggregate_id = ? AND consumer = ?`
	// progressSaveEpochCQL is a fenced save: it records the saver's epoch
	// beside the version (migration 0208).
	progressSaveEpochCQL = `UPDATE feed_progress USING TIMESTAMP ? SET version = ?, epoch = ? WHERE aggregate_id = ? AND consumer = ?`
	progressRangeCQL     = `SELECT aggregate_id, consumer, version FROM feed_progress
		WHERE token(aggregate_id) > ? AND token(aggregate_id) <= ?`
	lagReadCQL  = `SELECT events, age_ms, at FROM feed_lag WHERE consumer = ?`
	lagsReadCQL = `SELECT consumer, events, age_ms, at FROM feed_lag WHERE consumer IN ?`
	lagSaveCQL  = `INSERT INTO feed_lag (consumer, events, age_ms, at) VALUES (?, ?, ?, ?)`
)

// readProgress returns the version up to which the consumer has handled
// aggregate id, 0 when it has handled none of it.
func (sub *subscription) readProgress(ctx context.Context, id uuid.UUID) (int64, error) {
	var v int64
	err := sub.s.sess.Session.Query(progressReadCQL, id, sub.consumer).WithContext(ctx).Idempotent(true).Scan(&v)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read progress of %s: %w", id, err)
	}
	return v, nil
}

// saveProgress records that the consumer has handled each aggregate of upTo
// up to its version, with Concurrency writes in flight. The writes outlive
// ctx (within Config.Timeout each), so that a subscription that was
// stopped still saves what its Handler returned nil for.
func (sub *subscription) saveProgress(ctx context.Context, upTo map[uuid.UUID]int64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*sub.s.cfg.Timeout)
	defer cancel()
	// One fence check for the batch, or none when the handler's writes
	// ran it already (withBatchCheck): a holder whose check failed saves
	// nothing. The saves are USING TIMESTAMP of the version, so what one
	// that lapsed after its check still writes never moves progress back.
	if err := checkFence(ctx, sub.s.sess.Session, sub.s.cfg.Consistency, "save progress of "+sub.consumer); err != nil {
		return err
	}
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, sub.opt.Concurrency)
		mu   sync.Mutex
		fail error
	)
	for id, v := range upTo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			q := sub.s.sess.Session.Query(progressSaveCQL, v, v, id, sub.consumer)
			if f, ok := store.FenceOf(ctx); ok {
				q = sub.s.sess.Session.Query(progressSaveEpochCQL, v, v, f.Epoch, id, sub.consumer)
			}
			err := q.WithContext(ctx).Idempotent(true).Exec()
			if err != nil {
				mu.Lock()
				fail = fmt.Errorf("save progress of %s at %d: %w", id, v, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return fail
}

// rangeProgress returns the consumer's progress on every aggregate whose
// token lies in (lo, hi].
func (sub *subscription) rangeProgress(ctx context.Context, lo, hi int64) (map[uuid.UUID]int64, error) {
	iter := sub.s.sess.Session.Query(progressRangeCQL, lo, hi).WithContext(ctx).
		Idempotent(true).PageSize(rangePage).Iter()
	out := make(map[uuid.UUID]int64)
	var (
		id       uuid.UUID
		consumer string
		v        int64
	)
	for iter.Scan(&id, &consumer, &v) {
		// The rows of other consumers come too: filtering them here keeps
		// the query free of ALLOW FILTERING, and there are few consumers.
		if consumer == sub.consumer {
			out[id] = v
		}
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("read progress in (%d, %d]: %w", lo, hi, err)
	}
	return out, nil
}

// saveLag records what a pass measured, for Lag on every instance, under
// the subscription's key (the consumer, or its shard's name).
func (sub *subscription) saveLag(ctx context.Context, l store.Lag) error {
	err := sub.s.sess.Session.Query(lagSaveCQL, sub.key, l.Events, l.Age.Milliseconds(), l.At).
		WithContext(ctx).Idempotent(true).Exec()
	if err != nil {
		return fmt.Errorf("save lag: %w", err)
	}
	return nil
}

// savedLags reads what the last pass of any instance measured under each
// of keys, in a query per inLimit keys; a key whose pass never finished is
// missing.
func (s *Store) savedLags(ctx context.Context, keys []string) (map[string]store.Lag, error) {
	out := make(map[string]store.Lag, len(keys))
	err := inChunks(keys, func(keys []string) error {
		iter := s.sess.Session.Query(lagsReadCQL, keys).WithContext(ctx).Idempotent(true).Iter()
		var (
			key   string
			l     store.Lag
			ageMS int64
		)
		for iter.Scan(&key, &l.Events, &ageMS, &l.At) {
			out[key] = store.Lag{Known: true, Events: l.Events, Age: time.Duration(ageMS) * time.Millisecond, At: l.At.UTC()}
		}
		return iter.Close()
	})
	return out, err
}

// savedLag reads what the last pass of any instance measured under key
// (a consumer, or its shard's name); a zero Lag (Known false) when no pass
// ever finished.
func (s *Store) savedLag(ctx context.Context, consumer string) (store.Lag, error) {
	var (
		l     store.Lag
		ageMS int64
	)
	err := s.sess.Session.Query(lagReadCQL, consumer).WithContext(ctx).Idempotent(true).Scan(&l.Events, &ageMS, &l.At)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return store.Lag{}, nil
	case err != nil:
		return store.Lag{}, err
	}
	l.Known, l.Age, l.At = true, time.Duration(ageMS)*time.Millisecond, l.At.UTC()
	return l, nil
}
