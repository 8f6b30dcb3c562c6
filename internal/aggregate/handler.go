package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/telemetry"
)

// AnyVersion as Meta.Expected means the client sent no If-Match: a conflict
// with a concurrent writer is resolved by reloading and deciding again.
const AnyVersion int64 = -1

// Meta is what a command carries besides its own fields.
type Meta struct {
	CommandID     uuid.UUID // becomes every event's causation id
	CorrelationID uuid.UUID
	// Expected is the version the client last saw (If-Match), or AnyVersion.
	// A stale one is refused with ErrStale and never retried.
	Expected int64
	Metadata map[string]string // copied into every envelope
	// Minted: the command creates its aggregate under an id that the
	// server minted for it and has not handed out (no client id, no
	// Idempotency-Key whose retries reuse it), so that nothing else can
	// write that stream or its subject's key meanwhile. The handler then
	// stores its events with store.Store.Mint, and a registration mints
	// the customer's data key, each without a Paxos round on CQL (see
	// Handler.customer).
	Minted bool
}

// root is what the handler needs of an aggregate: replaying its history.
// replayed tells it its id and the version its history reached, so that its
// decisions know whether it exists.
//
// It lists no union of aggregate types: with one, load's A(new(T)) would not
// compile, as A's type set would no longer be just *T.
type root interface {
	apply(Event)
	replayed(id uuid.UUID, version int64)
}

// Handler runs commands: load the aggregate from its events, decide, append
// the new events at the loaded version.
//
// Commands on one aggregate are serialised inside the process, so racing
// requests queue instead of failing; across processes the store's
// expected-version check still decides, and a conflict reloads and retries a
// few times with jittered backoff.
type Handler struct {
	store   store.Store
	now     func() time.Time
	newID   func() uuid.UUID
	retries uint64

	// claimTTL is how long a pending email claim is held; claimHold bounds
	// the customer write that follows a claim, well within claimTTL (see
	// EmailClaim.holding); claimWait bounds how long a claim waits for
	// another customer's claim in flight to settle (see Handler.claim).
	claimTTL, claimHold, claimWait time.Duration

	mu    sync.Mutex
	locks map[uuid.UUID]*aggLock

	customers idSet // registered customers seen, for CreateOrder's check

	log   *zap.Logger
	snaps snapshotCache // the zero value takes and reads no snapshots

	appended func(aggregateType string, events int) // after each append

	keys    Keys                       // nil: personal data in plaintext
	claims  store.EmailClaims          // nil: no address can be claimed
	claimID func(key string) uuid.UUID // an address key's claims
	// hashedClaims: claimID is a keyed hash, and the UUIDv5 claims of
	// earlier builds are still read (legacyClaim).
	hashedClaims bool
}

type aggLock struct {
	sync.Mutex
	refs int
}

// NewHandler returns a handler that appends to st and stamps events with now
// (in UTC), configured by opts.
func NewHandler(st store.Store, now func() time.Time, opts ...Option) *Handler {
	h := &Handler{
		store:     st,
		now:       func() time.Time { return now().UTC() },
		newID:     func() uuid.UUID { return uuid.Must(uuid.NewV7()) },
		retries:   10,
		claimTTL:  time.Minute,
		claimHold: 10 * time.Second,
		claimWait: time.Second,
		locks:     make(map[uuid.UUID]*aggLock),
		customers: idSet{max: 1 << 16},
		log:       zap.NewNop(),
		appended:  func(string, int) {},
		claimID:   claimID,
	}
	for _, opt := range opts {
		opt(h)
	}
	return h
}

// WithAppended has the handler tell appended, after each append that
// succeeded, the aggregate's type and how many events it appended (for
// orderd_events_appended_total).
func WithAppended(appended func(aggregateType string, events int)) Option {
	return func(h *Handler) {
		if appended != nil {
			h.appended = appended
		}
	}
}

func (h *Handler) lock(id uuid.UUID) func() {
	h.mu.Lock()
	l := h.locks[id]
	if l == nil {
		l = &aggLock{}
		h.locks[id] = l
	}
	l.refs++
	h.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		h.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(h.locks, id)
		}
		h.mu.Unlock()
	}
}

// load replays the aggregate's events into a fresh A and returns it with its
// version, 0 when it has no events. Ids are shared by all aggregate types: a
// stream of another type is not replayed, but its version is kept, so that a
// create with that id is refused as existing and other commands find nothing.
// It reads no snapshot: it is the full replay that snapshots must agree with.
func load[T any, A interface {
	*T
	root
}](ctx context.Context, st store.Store, aggType string, id uuid.UUID) (A, int64, error) {
	a, v, _, err := replayTail(ctx, st, aggType, id, A(new(T)), 0)
	return a, v, err
}

// replayTail applies to a, which holds the aggregate's state at version
// after, the events that follow, and returns it with its version and the
// number of events it replayed.
func replayTail[A root](ctx context.Context, st store.Store, aggType string, id uuid.UUID, a A, after int64) (A, int64, int, error) {
	events, err := st.Load(ctx, id, after)
	if err != nil {
		return a, 0, 0, fmt.Errorf("aggregate: load %s: %w", id, err)
	}
	v := after
	if n := len(events); n > 0 {
		v = events[n-1].Sequence
	}
	if len(events) > 0 && events[0].AggregateType != aggType {
		a.replayed(uuid.Nil, v)
		return a, v, len(events), nil
	}
	for _, e := range events {
		ev, err := Decode(e)
		if err != nil {
			return a, 0, 0, err
		}
		a.apply(ev)
	}
	a.replayed(id, v)
	return a, v, len(events), nil
}

// Order runs one command on order id: decide sees the order as its events
// left it (Version 0 when it has none) and the command's time, and returns
// the events to append. It returns the order's new version.
func (h *Handler) Order(ctx context.Context, id uuid.UUID, meta Meta, decide func(o *Order, now time.Time) ([]Event, error)) (int64, error) {
	return handle[Order](ctx, h, OrderType, id, meta, false, decide, nil)
}

// Customer runs one command on customer id, as Order does for orders. A
// decision that gives the customer an address claims it first (see
// claims.go): it returns an ErrRejected error ("email_taken") when another
// customer holds the address.
func (h *Handler) Customer(ctx context.Context, id uuid.UUID, meta Meta, decide func(c *Customer, now time.Time) ([]Event, error)) (int64, error) {
	return h.customer(ctx, id, meta, false, decide)
}

// CreateOrder creates order id for a registered customer. It returns an
// ErrNotFound error when the customer has no events, an ErrInvalid error
// for invalid items (see CheckItems), and ErrExists when id has events
// already. A caller that answers a malformed command before an unknown
// customer checks the items first (as the API does).
func (h *Handler) CreateOrder(ctx context.Context, id uuid.UUID, meta Meta, customerID uuid.UUID, items []Item) (int64, error) {
	if err := h.customerExists(ctx, customerID); err != nil {
		return 0, err
	}
	return handle[Order](ctx, h, OrderType, id, meta, true, func(o *Order, now time.Time) ([]Event, error) {
		return o.Create(customerID, items, now)
	}, nil)
}

// RegisterCustomer creates customer id. It returns ErrExists when id has
// events already, and an ErrRejected error ("email_taken") when another
// customer holds the address.
func (h *Handler) RegisterCustomer(ctx context.Context, id uuid.UUID, meta Meta, email, firstName, lastName, phone string) (int64, error) {
	v, err := h.customer(ctx, id, meta, true, func(c *Customer, now time.Time) ([]Event, error) {
		return c.Register(email, firstName, lastName, phone, now)
	})
	if err == nil {
		h.customers.add(id)
	}
	return v, err
}

// customerExists checks that customerID is a registered customer. Customers
// are never deleted, so a customer once seen is remembered, and the check
// costs a read of the store only the first time.
func (h *Handler) customerExists(ctx context.Context, customerID uuid.UUID) error {
	if h.customers.has(customerID) {
		return nil
	}
	c, _, err := load[Customer](ctx, h.store, CustomerType, customerID)
	if err != nil {
		return err
	}
	if c.Version == 0 || c.ID != customerID {
		return &Error{Kind: ErrNotFound, Code: "customer_not_found", Field: "/customer_id",
			Detail: fmt.Sprintf("customer %s is not registered", customerID)}
	}
	h.customers.add(customerID)
	return nil
}

// idSet is a bounded set of ids. When full it starts again empty: it only
// saves reads, so forgetting is always safe.
type idSet struct {
	mu  sync.Mutex
	ids map[uuid.UUID]struct{}
	max int
}

func (s *idSet) has(id uuid.UUID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

func (s *idSet) add(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil || len(s.ids) >= s.max {
		s.ids = make(map[uuid.UUID]struct{})
	}
	s.ids[id] = struct{}{}
}

// guard runs between a decision that returned events and their append, at
// each attempt: it may refuse the command, or write elsewhere first (an
// email claim), and returns the context the append runs under and its
// cancel. Its errors are final.
type guard[A any] func(ctx context.Context, a A, v int64, evs []Event, now time.Time) (context.Context, context.CancelFunc, error)

// handle is the one command path. decide sees the aggregate at its current
// version (a zero aggregate when it has none) and the command's time. A
// create skips the load: it is decided on a zero aggregate and appended at
// version 0, so the store's expected-version check is what refuses an id
// that has events, and a create costs no read. guard may be nil.
func handle[T any, A interface {
	*T
	root
	found() error
}](ctx context.Context, h *Handler, aggType string, id uuid.UUID, meta Meta, create bool, decide func(a A, now time.Time) ([]Event, error), guard guard[A]) (int64, error) {
	unlock := h.lock(id)
	defer unlock()

	op := func() (int64, error) {
		a, v, tail := A(new(T)), int64(0), 0
		if !create {
			lctx, span := telemetry.Child(ctx, "aggregate load")
			var err error
			a, v, tail, err = loadCached[T, A](lctx, h, aggType, id)
			if span.IsRecording() {
				span.SetAttributes(attribute.String("orderd.aggregate_type", aggType),
					attribute.Int64("orderd.version", v), attribute.Int("orderd.events_replayed", tail))
			}
			telemetry.End(span, err)
			if err != nil {
				return 0, backoff.Permanent(err)
			}
		}
		if meta.Expected != AnyVersion && meta.Expected != v {
			// Existence before state: an unknown aggregate is not found,
			// whatever version the client expected of it.
			if err := a.found(); err != nil && !create {
				return 0, backoff.Permanent(err)
			}
			return 0, backoff.Permanent(&Error{Kind: ErrStale, Code: "version_mismatch",
				Detail: fmt.Sprintf("expected version %d, current version is %d", meta.Expected, v)})
		}
		now := h.now()
		evs, err := decide(a, now)
		if err != nil {
			return 0, backoff.Permanent(err)
		}
		if len(evs) == 0 {
			return v, nil // an idempotent no-op: nothing to append
		}
		envs, err := h.envelopes(aggType, id, v, evs, meta, now)
		if err != nil {
			return 0, backoff.Permanent(err)
		}
		actx := ctx
		if guard != nil {
			var cancel context.CancelFunc
			if actx, cancel, err = guard(ctx, a, v, evs, now); err != nil {
				return 0, backoff.Permanent(err)
			}
			defer cancel()
		}
		actx, span := telemetry.Child(actx, "append")
		if span.IsRecording() {
			span.SetAttributes(attribute.String("orderd.aggregate_type", aggType),
				attribute.String("orderd.aggregate_id", id.String()),
				attribute.Int64("orderd.expected_version", v), attribute.Int("orderd.events", len(envs)))
		}
		if create && meta.Minted {
			err = h.store.Mint(actx, id, envs) // nobody else can name id yet
		} else {
			err = h.store.Append(actx, id, v, envs)
		}
		telemetry.End(span, err)
		err = settleAppend(ctx, h.store, id, v, envs, err)
		if errors.Is(err, store.ErrConflict) && meta.Expected == AnyVersion && v > 0 {
			return 0, err // another process wrote first: reload and decide again
		}
		if errors.Is(err, store.ErrConflict) {
			if v == 0 {
				return 0, backoff.Permanent(&Error{Kind: ErrExists, Code: existsCode(aggType),
					Detail: fmt.Sprintf("%s %s already exists", aggType, id)})
			}
			return 0, backoff.Permanent(&Error{Kind: ErrStale, Code: "version_mismatch",
				Detail: fmt.Sprintf("version %d is no longer current", v)})
		}
		if err != nil {
			return 0, backoff.Permanent(err)
		}
		h.appended(aggType, len(envs))
		if note, ok := ctx.Value(appendNoteKey{}).(func(uuid.UUID, int64, int64)); ok {
			note(id, v+1, v+int64(len(envs)))
		}
		h.snaps.after(a, aggType, id, v, envs, tail)
		return v + int64(len(envs)), nil
	}

	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(2*time.Millisecond),
		backoff.WithMaxInterval(100*time.Millisecond),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0),
	)
	v, err := backoff.RetryWithData(op, backoff.WithContext(backoff.WithMaxRetries(b, h.retries), ctx))
	if errors.Is(err, store.ErrConflict) {
		return 0, &Error{Kind: ErrRejected, Code: "concurrent_modification",
			Detail: fmt.Sprintf("%s %s kept changing under %d attempts; retry the command", aggType, id, h.retries+1)}
	}
	return v, err
}

type appendNoteKey struct{}

// WithAppendNote returns ctx, under which every command the handler runs
// tells note, once its append succeeded, the aggregate and the sequences
// of the events it appended. The idempotency middleware learns with it
// whether a keyed command's events are its answer.
func WithAppendNote(ctx context.Context, note func(id uuid.UUID, first, last int64)) context.Context {
	return context.WithValue(ctx, appendNoteKey{}, note)
}

func existsCode(aggType string) string {
	if aggType == OrderType {
		return "order_exists"
	}
	return "customer_exists"
}

func (h *Handler) envelopes(aggType string, id uuid.UUID, v int64, evs []Event, meta Meta, now time.Time) ([]store.Event, error) {
	out := make([]store.Event, len(evs))
	for i, ev := range evs {
		data, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("aggregate: encode %s: %w", ev.EventType(), err)
		}
		out[i] = store.Event{
			ID:            h.newID(),
			AggregateID:   id,
			AggregateType: aggType,
			Sequence:      v + int64(i) + 1,
			Type:          ev.EventType(),
			SchemaVersion: SchemaVersion(ev.EventType()),
			Data:          data,
			CausationID:   meta.CommandID,
			CorrelationID: meta.CorrelationID,
			Timestamp:     now,
			Metadata:      meta.Metadata,
		}
	}
	return out, nil
}
