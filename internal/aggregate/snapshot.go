package aggregate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// The state schema versions of the aggregates that snapshot. Bump one when
// the fields of its aggregate change (TestSnapshotStateFields says when):
// snapshots of an older version are then ignored and the aggregates
// replayed from their events, so a change of the aggregate never needs a
// migration of its snapshots.
const (
	orderStateVersion    = 1
	customerStateVersion = 2 // 2: Erased
)

// snapshotTimeout bounds one background save.
const snapshotTimeout = 5 * time.Second

// maxSnapshotSaves bounds the saves in flight; a snapshot due while that
// many are running is dropped (the next threshold takes another).
const maxSnapshotSaves = 8

// Option configures a Handler.
type Option func(*Handler)

// WithSnapshots makes the handler load aggregates from their newest usable
// snapshot in snaps plus the events after it, and save a snapshot, in the
// background, after an append that crosses a multiple of every events (or
// that follows a load that replayed every events or more). every ≤ 0 or a
// nil snaps takes and reads no snapshots.
func WithSnapshots(snaps store.Snapshots, every int64) Option {
	return func(h *Handler) {
		if snaps == nil || every <= 0 {
			return
		}
		h.snaps.store, h.snaps.every, h.snaps.recentMin = snaps, every, recentMin
		h.snaps.slots = make(chan struct{}, maxSnapshotSaves)
		h.snaps.log = h.log
	}
}

// WithLogger gives the handler a logger, for what it does in the background
// (snapshots); the default logs nothing.
func WithLogger(log *zap.Logger) Option {
	return func(h *Handler) {
		if log != nil {
			h.log, h.snaps.log = log, log
		}
	}
}

// SnapshotStats counts what became of snapshots since the handler started.
type SnapshotStats struct {
	Saved   uint64 // written
	Failed  uint64 // a save or a read of the snapshot store failed
	Dropped uint64 // due while maxSnapshotSaves saves were running
	Ignored uint64 // found but unusable: another state version, or undecodable
	Recent  uint64 // loads that started from a state kept in memory
}

// SnapshotStats returns the handler's snapshot counters.
func (h *Handler) SnapshotStats() SnapshotStats {
	c := &h.snaps
	return SnapshotStats{Saved: c.saved.Load(), Failed: c.failed.Load(), Dropped: c.dropped.Load(), Ignored: c.ignored.Load(),
		Recent: c.recent.hits.Load()}
}

// snapshotCache is the handler's use of a store.Snapshots, with a tier
// in memory in front of it: the state each command left, so that the next
// command on a hot aggregate replays nothing.
type snapshotCache struct {
	store     store.Snapshots // nil: snapshots off
	recent    recentStates
	recentMin int // see recentMin; a field so that tests can lower it
	every     int64
	slots     chan struct{} // one token per save in flight
	log       *zap.Logger
	wg        sync.WaitGroup // the saves in flight, for tests
	// keys seal the personal fields of the snapshots saved (nil: plain),
	// so that the snapshot store holds none in plaintext.
	keys Keys

	saved, failed, dropped, ignored atomic.Uint64
}

// snapshotRoot is an aggregate that snapshots: it encodes its state as JSON
// of its fields, at a state version of its own.
type snapshotRoot interface {
	root
	stateVersion() int
	encodeState() ([]byte, error)
	decodeState([]byte) error
}

// loadCached is load through the snapshot cache: it starts from the newest
// snapshot of id, when there is a usable one, and replays the events after
// it. It also returns how many events it replayed.
func loadCached[T any, A interface {
	*T
	root
}](ctx context.Context, h *Handler, aggType string, id uuid.UUID) (A, int64, int, error) {
	a := A(new(T))
	if s, ok := any(a).(snapshotRoot); ok && h.snaps.store != nil {
		if from, ok := h.snaps.recent.restore(s, aggType, id); ok {
			return replayTail(ctx, h.store, aggType, id, a, from)
		}
		a = A(new(T))
		s = any(a).(snapshotRoot)
		if from, ok := h.restore(ctx, s, aggType, id, math.MaxInt64); ok {
			return replayTail(ctx, h.store, aggType, id, a, from)
		}
		a = A(new(T)) // restore may have left part of a bad snapshot
	}
	return replayTail(ctx, h.store, aggType, id, a, 0)
}

// restore sets a to id's newest snapshot at or below version atOrBelow and
// returns its version; false when there is none it can use. A snapshot
// that cannot be used is logged and counted, never an error: the events
// still answer.
func (h *Handler) restore(ctx context.Context, a snapshotRoot, aggType string, id uuid.UUID, atOrBelow int64) (int64, bool) {
	c := &h.snaps
	snap, found, err := c.store.Latest(ctx, id, atOrBelow)
	if err == nil && found && c.keys != nil {
		snap.State, err = openState(ctx, c.keys, aggType, id, snap.State)
	}
	if err != nil {
		c.failed.Add(1)
		h.log.Warn("snapshot read failed; replaying the events", zap.Stringer("aggregate_id", id), zap.Error(err))
		return 0, false
	}
	if !found {
		return 0, false
	}
	why := ""
	switch {
	case snap.AggregateType != aggType:
		why = fmt.Sprintf("aggregate type %s, want %s", snap.AggregateType, aggType)
	case snap.StateVersion != a.stateVersion():
		why = fmt.Sprintf("state version %d, want %d", snap.StateVersion, a.stateVersion())
	case snap.Version < 1:
		why = fmt.Sprintf("version %d", snap.Version)
	default:
		if err := a.decodeState(snap.State); err != nil {
			why = err.Error()
		}
	}
	if why != "" {
		c.ignored.Add(1)
		h.log.Info("snapshot ignored; replaying the events", zap.Stringer("aggregate_id", id),
			zap.Int64("version", snap.Version), zap.String("reason", why))
		return 0, false
	}
	a.replayed(id, snap.Version)
	return snap.Version, true
}

// after runs after envs were appended to a at version from, tail being how
// many events loading a replayed. It applies them to a (the command owns a
// no longer) and encodes its state when either use of it is due: kept in
// memory when the load and the command handled recentMin events or more
// since the state a load started from (so that a hot aggregate's loads
// replay fewer than that, and a command that replayed little, a create
// above all, pays no encoding); saved in the background when the append
// crosses a multiple of every or the load replayed every events or more.
func (c *snapshotCache) after(a any, aggType string, id uuid.UUID, from int64, envs []store.Event, tail int) {
	s, ok := a.(snapshotRoot)
	if !ok || c.store == nil {
		return
	}
	to := from + int64(len(envs))
	due := from/c.every != to/c.every || int64(tail) >= c.every
	keep := tail+len(envs) >= c.recentMin
	if !due && !keep {
		return
	}
	state, err := stateAt(s, id, to, envs)
	if err != nil {
		c.failed.Add(1)
		c.log.Warn("snapshot state not encoded", zap.Stringer("aggregate_id", id), zap.Int64("version", to), zap.Error(err))
		return
	}
	if keep {
		c.recent.put(id, recentState{aggType: aggType, version: to, stateVersion: s.stateVersion(), state: state})
	}
	if !due {
		return
	}
	select {
	case c.slots <- struct{}{}:
	default:
		c.dropped.Add(1)
		return
	}
	c.wg.Add(1)
	go func() {
		defer func() { <-c.slots; c.wg.Done() }()
		ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
		defer cancel()
		state := state
		var err error
		if c.keys != nil {
			state, err = sealState(ctx, c.keys, aggType, id, state)
		}
		if err == nil {
			err = c.store.Save(ctx, store.Snapshot{AggregateID: id, AggregateType: aggType, Version: to,
				StateVersion: s.stateVersion(), State: state, TakenAt: time.Now().UTC()})
		}
		if err != nil {
			c.failed.Add(1)
			c.log.Warn("snapshot not saved", zap.Stringer("aggregate_id", id), zap.Int64("version", to), zap.Error(err))
			return
		}
		c.saved.Add(1)
	}()
}

// stateAt applies envs to a, as a replay would, and returns a's state at
// version to, encoded.
func stateAt(a snapshotRoot, id uuid.UUID, to int64, envs []store.Event) ([]byte, error) {
	for _, e := range envs {
		ev, err := Decode(e)
		if err != nil {
			return nil, err
		}
		a.apply(ev)
	}
	a.replayed(id, to)
	return a.encodeState()
}

// maxRecent bounds the states kept in memory: about 300 bytes each.
const maxRecent = 10_000

// recentMin is how many events a load and its command must have handled
// for the state to be kept in memory: a hot aggregate's load then replays
// fewer than that, and a command that replayed less pays no encoding.
const recentMin = 16

// recentStates are the encoded states the last commands left, by
// aggregate: what a store snapshot holds, without the read. A state at a
// version is the same forever (events are never changed), so an entry is
// never wrong, only older than the events, whose tail the load replays.
// When full, an arbitrary entry makes room.
type recentStates struct {
	mu     sync.Mutex
	states map[uuid.UUID]recentState
	hits   atomic.Uint64
}

type recentState struct {
	aggType      string
	version      int64
	stateVersion int
	state        []byte
}

func (r *recentStates) put(id uuid.UUID, s recentState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.states == nil {
		r.states = map[uuid.UUID]recentState{}
	}
	if _, ok := r.states[id]; !ok && len(r.states) >= maxRecent {
		for old := range r.states {
			delete(r.states, old)
			break
		}
	}
	r.states[id] = s
}

// restore sets a to id's state in memory and returns its version; false
// when there is none of a's type and state version.
func (r *recentStates) restore(a snapshotRoot, aggType string, id uuid.UUID) (int64, bool) {
	r.mu.Lock()
	s, ok := r.states[id]
	r.mu.Unlock()
	if !ok || s.aggType != aggType || s.stateVersion != a.stateVersion() || a.decodeState(s.state) != nil {
		return 0, false
	}
	a.replayed(id, s.version)
	r.hits.Add(1)
	return s.version, true
}

// decodeStrict decodes JSON into v, refusing fields v does not have: a
// snapshot with fields the aggregate lost is of another state version.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode snapshot state: %w", err)
	}
	return nil
}

// orderState is Order without its methods: its JSON is an order's snapshot.
type orderState Order

func (o *Order) stateVersion() int            { return orderStateVersion }
func (o *Order) encodeState() ([]byte, error) { return json.Marshal((*orderState)(o)) }
func (o *Order) decodeState(b []byte) error   { return decodeStrict(b, (*orderState)(o)) }

// customerState is Customer without its methods: its JSON is a customer's
// snapshot.
type customerState Customer

func (c *Customer) stateVersion() int            { return customerStateVersion }
func (c *Customer) encodeState() ([]byte, error) { return json.Marshal((*customerState)(c)) }
func (c *Customer) decodeState(b []byte) error   { return decodeStrict(b, (*customerState)(c)) }
