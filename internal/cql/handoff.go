package cql

import (
	"context"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// handOffQueue bounds the appends of this process that one subscription
// holds for its delivery core: at 2 KiB per append and 128 subscriptions
// (64 shards, a projector and a relay on each), 64 MiB at most. A full
// queue drops the append's hand-off, never waits: the fast path and the
// recent pass still bring it, with a read.
const handOffQueue = 256

// localSubs is the subscriptions running in this process, for the
// hand-off: an immutable slice, replaced whole when one starts or ends.
type localSubs struct {
	subs []*subscription
}

// addLocal and dropLocal register sub for the hand-off, and end that.
func (s *Store) addLocal(sub *subscription) {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	var cur []*subscription
	if l := s.local.Load(); l != nil {
		cur = l.subs
	}
	s.local.Store(&localSubs{subs: append(slices.Clip(cur), sub)})
}

func (s *Store) dropLocal(sub *subscription) {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	if l := s.local.Load(); l != nil {
		s.local.Store(&localSubs{subs: slices.DeleteFunc(slices.Clone(l.subs), func(x *subscription) bool { return x == sub })})
	}
}

// handOff gives an append this process has just committed (Append
// returned nil) to the subscriptions here whose shard holds the
// aggregate: its events as a read would return them, so that their
// delivery core hands them without reading the events, and for a new
// aggregate (expected 0) without reading the consumer's progress either,
// which cannot be above 0 for an aggregate nobody could have seen before.
// The delivery core's rules still hold: only events that follow what the
// consumer handled, without a hole, are handed, under its fence. On
// Cassandra this replaces two reads and the hints' delay for the
// instance's own appends; on ScyllaDB the CDC log's delay.
func (s *Store) handOff(id uuid.UUID, expected int64, events []store.Event) {
	l := s.local.Load()
	if l == nil || len(l.subs) == 0 || s.noHandOff {
		return
	}
	var (
		evs        []store.Event
		count, idx int // id's shard idx of count shards, for the last count met
	)
	for _, sub := range l.subs {
		if c := sub.shard.Count; c > 1 {
			if c != count {
				count, idx = c, shardOf(id, c)
			}
			if idx != sub.shard.Index {
				continue
			}
		}
		if evs == nil {
			var ok bool
			if evs, ok = s.asStored(events); !ok {
				return
			}
		}
		known := int64(-1)
		if expected == 0 {
			known = 0
		}
		select {
		case sub.local <- request{id: id, version: expected + int64(len(events)), events: evs, known: known}:
		default:
			s.handOffsDropped.Add(1)
		}
	}
}

// asStored returns events as a read of the events table returns them:
// the timestamp to the millisecond in UTC, no empty metadata map, no
// position, upcast. false if the upcaster refuses one (then the read
// path reports it).
func (s *Store) asStored(events []store.Event) ([]store.Event, bool) {
	out := make([]store.Event, len(events))
	for i, e := range events {
		e.Timestamp = time.UnixMilli(e.Timestamp.UnixMilli()).UTC()
		if len(e.Metadata) == 0 {
			e.Metadata = nil
		}
		e.Position = 0
		if s.up != nil {
			var err error
			if e, err = s.up.Upcast(e); err != nil {
				return nil, false
			}
		}
		out[i] = e
	}
	return out, true
}

// forwardLocal passes the hand-offs to the delivery core until ctx ends.
func (sub *subscription) forwardLocal(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-sub.local:
			if err := sub.send(ctx, r); err != nil {
				return nil // ctx ended
			}
		}
	}
}

// HandOffsDropped is how many hand-offs of this process's appends were
// dropped because a subscription's queue was full.
func (s *Store) HandOffsDropped() int64 { return s.handOffsDropped.Load() }
