package cql

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/store"
)

// replayCQL reads every event in a token range. Each partition comes whole
// and in clustering (sequence) order; paging may cut a partition between
// two pages, never reorder it.
var replayCQL = `SELECT ` + strings.Join(columns, ", ") + ` FROM events
	WHERE token(aggregate_id) > ? AND token(aggregate_id) <= ?`

const (
	// replayBatch is about how many events Replay hands h at a time: the
	// handler's per-batch cost is spread thin, and the workers' buffers
	// and the queue stay at a few tens of thousands of events.
	replayBatch = 2048
	// replayPage is the page size of the range scans: a round trip per
	// page, a page's rows held in the driver's memory.
	replayPage = 2000
	// replayWorkers is how many token ranges Replay and Count read at
	// once. One range scan keeps a coordinator busy a round trip at a
	// time; several keep the cluster's nodes and cores busy.
	replayWorkers = 8
	// replayRanges is how many token ranges the ring is cut into for
	// Replay and Count: several per worker, so that ranges of uneven size
	// (vnodes, skewed keys) even out across the workers.
	replayRanges = 64
)

// Replay hands h every event of the store, upcast, in batches of about
// replayBatch, and returns mark 0: this backend has no global commit order,
// so after is ignored and every Replay hands everything. Events committed
// during the call may or may not be included.
//
// replayWorkers goroutines scan token ranges at once, each keeping the
// events of a range in the order the range reads them, which is sequence
// order within each aggregate: an aggregate is one partition, in one range,
// read by one worker. h is called from one goroutine at a time, with the
// batches of each worker in the order it filled them, so each aggregate's
// events reach h in order, without gaps, across batches too.
//
// It returns h's error (wrapped) as soon as h fails, ctx's when it ends,
// store.ErrClosed after Close, and an error wrapping store.ErrUnavailable
// when the cluster fails.
func (s *Store) Replay(ctx context.Context, after int64, h store.Handler) (int64, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	ranges := make(chan tokenRange, replayRanges)
	for _, r := range tokenRanges(replayRanges) {
		ranges <- r
	}
	close(ranges)
	g, gctx := errgroup.WithContext(ctx)
	batches := make(chan []store.Event, replayWorkers)
	var workers sync.WaitGroup
	for range replayWorkers {
		workers.Add(1)
		g.Go(func() error {
			defer workers.Done()
			return s.replayRanges(gctx, ranges, batches)
		})
	}
	go func() {
		workers.Wait()
		close(batches)
	}()
	g.Go(func() error {
		for evs := range batches {
			if err := gctx.Err(); err != nil {
				return err // a worker failed: hand nothing more
			}
			if err := h(gctx, evs); err != nil {
				return fmt.Errorf("scylla: replay: handle %d events: %w", len(evs), err)
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, err
	}
	return 0, nil
}

// replayRanges is one Replay worker: it scans the ranges it receives, one
// after the other, and sends their events to batches in batches of
// replayBatch (the last one shorter). A batch may span ranges: they hold
// different aggregates.
func (s *Store) replayRanges(ctx context.Context, ranges <-chan tokenRange, batches chan<- []store.Event) error {
	batch := make([]store.Event, 0, replayBatch)
	send := func() error {
		select {
		case batches <- batch:
			batch = make([]store.Event, 0, replayBatch)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for r := range ranges {
		iter := s.sess.Session.Query(replayCQL, r.lo, r.hi).WithContext(ctx).
			Idempotent(true).PageSize(replayPage).Iter()
		err := s.scanEvents(iter, nil, func(e store.Event) error {
			batch = append(batch, e)
			if len(batch) < replayBatch {
				return nil
			}
			return send()
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("scylla: replay tokens (%d, %d]: %w", r.lo, r.hi, s.closedOr(ctx, err))
		}
	}
	if len(batch) == 0 {
		return nil
	}
	return send()
}

// Count returns the number of events: the sum of every aggregate's
// version (see versionIn), read with one SELECT DISTINCT of the static
// cells per token range, replayWorkers ranges at once. It reads a row per aggregate, not
// per event, so it costs what a reconciliation pass's read of the versions
// does. It returns store.ErrClosed after Close and an error wrapping
// store.ErrUnavailable when the cluster fails.
func (s *Store) Count(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	ranges := tokenRanges(replayRanges)
	sums := make([]int64, len(ranges))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(replayWorkers)
	for i, r := range ranges {
		g.Go(func() error {
			iter := s.sess.Session.Query(versionsCQL, r.lo, r.hi).WithContext(gctx).
				Idempotent(true).PageSize(rangePage).Iter()
			var (
				id              uuid.UUID
				version, minted *int64 // both null in a partition written by hand
			)
			for iter.Scan(&id, &version, &minted) {
				sums[i] += versionIn(version, minted)
			}
			if err := iter.Close(); err != nil {
				return fmt.Errorf("scylla: count events in tokens (%d, %d]: %w", r.lo, r.hi, s.closedOr(ctx, err))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	var n int64
	for _, k := range sums {
		n += k
	}
	return n, nil
}

var _ store.Log = (*Store)(nil)
