package cql

import (
	"context"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/scylladb/gocqlx/v3"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/cqltest"
)

// env is one keyspace on the test's CQL server, with the event store on it.
type env struct {
	t     testing.TB
	hosts []string
	ks    string
	store *Store
}

// newEnv creates a fresh keyspace through the event store's Open, which
// applies every file of migrations/scylla (the views' 01xx files among
// them) as production does; cqltest drops it when the test ends. Without a
// CQL server the test skips, or fails under CI=true.
func newEnv(t testing.TB) *env {
	t.Helper()
	hosts := cqltest.Hosts(t)
	ks := cqltest.Keyspace(t, hosts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := OpenStore(ctx, Config{Hosts: hosts, Keyspace: ks, Timeout: 15 * time.Second,
		Upcaster: aggregate.Upcasters()}, Options{})
	if err != nil {
		t.Fatalf("open the event store on keyspace %s: %v", ks, err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &env{t: t, hosts: hosts, ks: ks, store: st}
}

// views returns views on the env's keyspace over a session of their own,
// as a separate orderd process would have, closed when t ends.
func (e *env) views(t testing.TB, log *zap.Logger, opts ...ViewsOption) *Views {
	t.Helper()
	if log == nil {
		log = zap.NewNop()
	}
	return NewViews(e.session(t), log, opts...)
}

// catalog returns a catalog on the env's keyspace over a session of its
// own, as a separate orderd process would have, closed when t ends.
func (e *env) catalog(t testing.TB) *Catalog {
	t.Helper()
	return NewCatalog(e.session(t), e.ks, zap.NewNop())
}

// session returns a new session on the env's keyspace, closed when t ends,
// configured further by opts.
func (e *env) session(t testing.TB, opts ...func(*gocql.ClusterConfig)) gocqlx.Session {
	t.Helper()
	c := gocql.NewCluster(e.hosts...)
	c.Keyspace = e.ks
	// A loaded 2-vCPU node can take seconds over a contended Paxos round.
	c.Timeout, c.ConnectTimeout = 15*time.Second, 15*time.Second
	for _, opt := range opts {
		opt(c)
	}
	s, err := gocqlx.WrapSession(c.CreateSession())
	if err != nil {
		t.Fatalf("connect to %v: %v", e.hosts, err)
	}
	t.Cleanup(s.Close)
	return s
}

// eventsOf returns the events of aggregate id among events.
// deliveredOrder is the first order of a short pipeline and its four
// events: created, confirmed, shipped, delivered.
func deliveredOrder(t testing.TB) (uuid.UUID, []store.Event) {
	t.Helper()
	events := readmodeltest.Pipeline(t, 11)
	id := events[1].AggregateID
	return id, eventsOf(events, id)
}

func eventsOf(events []store.Event, id uuid.UUID) []store.Event {
	var out []store.Event
	for _, e := range events {
		if e.AggregateID == id {
			out = append(out, e)
		}
	}
	return out
}

// foldOrder projects events with readmodel's pure function, keeping times
// to the millisecond as this backend does.
func foldOrder(t testing.TB, events []store.Event) readmodel.Order {
	t.Helper()
	var o readmodel.Order
	for _, e := range events {
		if _, err := o.Apply(e); err != nil {
			t.Fatalf("fold %s #%d: %v", e.AggregateID, e.Sequence, err)
		}
	}
	o.CreatedAt, o.UpdatedAt = o.CreatedAt.Truncate(time.Millisecond), o.UpdatedAt.Truncate(time.Millisecond)
	return o
}

// countedViews returns views on a session of their own whose Paxos
// rounds r counts (Rounds, the observer the tests of rounds per command
// use).
func (e *env) countedViews(t testing.TB, r *Rounds) *Views {
	t.Helper()
	s := e.session(t, func(cfg *gocql.ClusterConfig) { cfg.QueryObserver, cfg.BatchObserver = r, r })
	return NewViews(s, zap.NewNop())
}

// lwts returns the lightweight transactions r counted since its last
// Take, and starts it again from zero.
func lwts(r *Rounds) int {
	lwt, _ := r.Take()
	n := 0
	for _, c := range lwt {
		n += c
	}
	return n
}

// fenced returns ctx with the fence of a lease taken for the test, as the
// projector's feed hands its batches over.
func (e *env) fenced(t testing.TB, ctx context.Context) context.Context {
	t.Helper()
	lease := "views-" + uuid.NewString()
	epoch, err := e.store.Acquire(ctx, lease, "test", time.Hour)
	if err != nil {
		t.Fatalf("acquire lease %s: %v", lease, err)
	}
	return store.WithFence(ctx, store.Fence{Lease: lease, Epoch: epoch})
}
