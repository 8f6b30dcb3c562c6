package cql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	gmigrate "github.com/scylladb/gocqlx/v3/migrate"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/cqltest"
	"github.com/orderd/orderd/internal/store/storetest"
	"github.com/orderd/orderd/migrations"
)

// testConfig returns the configuration of a store on the test server, in a
// keyspace of t's own. Timeouts are generous: a single Cassandra node on
// two cores can take seconds over a schema change.
func testConfig(t testing.TB) Config {
	t.Helper()
	hosts := cqltest.Hosts(t)
	return Config{Hosts: hosts, Keyspace: cqltest.Keyspace(t, hosts), Timeout: cqltest.Timeout}
}

// testFeed makes the reconciliation pass run every 300 ms over 4 token
// ranges, so that the suite's waits for it end quickly without swamping a
// small machine.
var testFeed = FeedOptions{ReconcileEvery: 300 * time.Millisecond, RangeSplits: 4}

// mustOpen opens a store on cfg and closes it in t's cleanup.
func mustOpen(t testing.TB, cfg Config, up store.Upcaster) *Store {
	t.Helper()
	cfg.Upcaster = up
	return openWith(t, cfg, Options{})
}

// withFeed returns cfg with the feed options f.
func withFeed(cfg Config, f FeedOptions) Config {
	cfg.Feed = f
	return cfg
}

// openWith opens a store on cfg with opts (Feed testFeed and a test logger
// unless set) and closes it in t's cleanup.
func openWith(t testing.TB, cfg Config, opts Options) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if reflect.DeepEqual(cfg.Feed, FeedOptions{}) {
		cfg.Feed = testFeed
	}
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	s, err := OpenStore(ctx, cfg, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.Keyspace, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// blind opens, on the keyspace of s, a store whose appends write no hint:
// on Cassandra only the reconciliation pass sees them. (On ScyllaDB the CDC
// log sees them all the same.)
func blind(t *testing.T, s store.Store) store.Store {
	cfg := s.(*Store).cfg
	cfg.Upcaster = nil
	return openWith(t, cfg, Options{NoHints: true, NoHandOff: true})
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, up store.Upcaster) store.Store {
		return mustOpen(t, testConfig(t), up)
	}, storetest.Capabilities{Blind: blind})
}

func TestRestart(t *testing.T) {
	storetest.RunRestart(t, func(t *testing.T) (store.Store, func() store.Store) {
		cfg := testConfig(t) // the reopened store finds the same keyspace
		return mustOpen(t, cfg, nil), func() store.Store { return mustOpen(t, cfg, nil) }
	}, storetest.Capabilities{})
}

// event returns the event at seq of aggregate id, as a writer builds it.
func event(id uuid.UUID, seq int64) store.Event {
	return store.Event{
		ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: "Widget",
		Sequence: seq, Type: "WidgetTurned", SchemaVersion: 1,
		Data:        json.RawMessage(fmt.Sprintf(`{"seq":%d,"note":"some payload of a realistic size"}`, seq)),
		CausationID: uuid.New(), CorrelationID: uuid.New(),
		Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC),
		Metadata:  map[string]string{"actor": "test"},
	}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestMigrateIdempotent: opening a keyspace that is already migrated, or
// migrating it again, changes nothing and loses nothing.
func TestMigrateIdempotent(t *testing.T) {
	cfg := testConfig(t)
	s := mustOpen(t, cfg, nil)
	id := uuid.Must(uuid.NewV7())
	want := event(id, 1)
	if err := s.Append(ctxFor(t), id, 0, []store.Event{want}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	t.Logf("server is ScyllaDB: %v", s.IsScylla())

	applied := func() []gmigrate.Info {
		t.Helper()
		infos, err := gmigrate.List(ctxFor(t), s.sess)
		if err != nil {
			t.Fatalf("list migrations: %v", err)
		}
		var out []gmigrate.Info
		for _, in := range infos {
			in.StartTime, in.EndTime = time.Time{}, time.Time{}
			out = append(out, *in)
		}
		return out
	}
	before := applied()
	files, err := fs.Glob(migrations.Scylla, "scylla/*.cql")
	if err != nil || len(files) == 0 || len(before) != len(files) {
		t.Fatalf("%d migrations applied, %d files (%v)", len(before), len(files), err)
	}

	// Again through a second store on the same keyspace, the standalone
	// Migrate and the method, while the first store is open.
	s2 := mustOpen(t, cfg, nil)
	withLog := cfg
	withLog.Logger = zaptest.NewLogger(t)
	if err := Migrate(ctxFor(t), withLog); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := s.Migrate(ctxFor(t)); err != nil {
		t.Fatalf("Store.Migrate: %v", err)
	}
	if after := applied(); !slices.Equal(after, before) {
		t.Errorf("migrations applied after migrating again: %+v, before: %+v", after, before)
	}
	for _, st := range []*Store{s, s2} {
		got, err := st.Load(ctxFor(t), id, 0)
		if err != nil || len(got) != 1 || got[0].ID != want.ID {
			t.Errorf("Load after migrating again: %d events, %v; want the one appended", len(got), err)
		}
	}
	if err := s2.Append(ctxFor(t), id, 0, []store.Event{event(id, 1)}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Append at version 0 through the second store: %v, want ErrConflict", err)
	}
}

// TestLWTRace: 32 appends race at the same expected version, on a new
// aggregate and on one with events. Exactly one wins, the others get
// ErrConflict, and the stream holds the winner's event once, at the next
// sequence. This is the race a read-then-write append loses silently.
func TestLWTRace(t *testing.T) {
	s := mustOpen(t, testConfig(t), nil)
	for _, expected := range []int64{0, 3} {
		t.Run(fmt.Sprintf("at version %d", expected), func(t *testing.T) {
			id := uuid.Must(uuid.NewV7())
			var before []store.Event
			for seq := int64(1); seq <= expected; seq++ {
				before = append(before, event(id, seq))
			}
			if expected > 0 {
				if err := s.Append(ctxFor(t), id, 0, before); err != nil {
					t.Fatalf("Append: %v", err)
				}
			}

			const n = 32
			var (
				start = make(chan struct{})
				wg    sync.WaitGroup
				errs  [n]error
				evs   [n]store.Event
			)
			ctx := ctxFor(t)
			for i := range n {
				evs[i] = event(id, expected+1)
				wg.Go(func() {
					<-start
					errs[i] = s.Append(ctx, id, expected, []store.Event{evs[i]})
				})
			}
			close(start)
			wg.Wait()

			winner, conflicts := -1, 0
			var lost error
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Fatalf("appends %d and %d both succeeded at version %d", winner, i, expected)
				case err == nil:
					winner = i
				case errors.Is(err, store.ErrConflict):
					conflicts++
					lost = err
				default:
					t.Errorf("append %d: %v, want nil or ErrConflict", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no append succeeded")
			}
			t.Logf("1 winner, %d conflicts, %d appends so far settled by a read; a loser got: %v",
				conflicts, s.settles.Load(), lost)
			got, err := s.Load(ctxFor(t), id, 0)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(got) != int(expected)+1 || got[expected].ID != evs[winner].ID {
				t.Fatalf("stream has %d events (last %v), want %d ending with the winner's %s",
					len(got), got[len(got)-1].ID, expected+1, evs[winner].ID)
			}
		})
	}
}

// TestAppendCtxEnds: an append whose ctx ends around the time it is sent
// still reports what happened: nil exactly when its event is stored, and
// ctx's error only when nothing is.
func TestAppendCtxEnds(t *testing.T) {
	s := mustOpen(t, testConfig(t), nil)
	for _, d := range []time.Duration{0, 50 * time.Microsecond, 300 * time.Microsecond, time.Millisecond, 3 * time.Millisecond} {
		stored := 0
		for range 5 {
			id := uuid.Must(uuid.NewV7())
			e := event(id, 1)
			ctx, cancel := context.WithTimeout(context.Background(), d)
			err := s.Append(ctx, id, 0, []store.Event{e})
			cancel()
			got, lerr := s.Load(ctxFor(t), id, 0)
			if lerr != nil {
				t.Fatalf("Load: %v", lerr)
			}
			ok := len(got) == 1 && got[0].ID == e.ID
			switch {
			case err == nil && !ok:
				t.Errorf("deadline %v: Append returned nil but the event is not stored", d)
			case err != nil && ok:
				t.Errorf("deadline %v: Append returned %v but the event is stored", d, err)
			case err != nil && !errors.Is(err, context.DeadlineExceeded):
				t.Errorf("deadline %v: Append: %v, want nil or DeadlineExceeded", d, err)
			}
			if ok {
				stored++
			}
		}
		t.Logf("deadline %v: %d of 5 appends stored", d, stored)
	}
}

// serverTimeout stands for a write timeout of type CAS answered by the
// server, which the driver cannot be made to produce on demand.
type serverTimeout struct{}

func (serverTimeout) Code() int       { return gocql.ErrCodeWriteTimeout }
func (serverTimeout) Message() string { return "Operation timed out - received only 0 responses." }
func (serverTimeout) Error() string   { return "write timeout (CAS)" }

// TestSettle: the read that settles a timed-out append tells an applied
// transaction (nil) from one whose version another took (ErrConflict) and
// from one the server gave up on (ErrUnavailable, never ErrConflict), waits
// out a request the client gave up on before it reads, and leaves the
// outcome of such a request open (ErrOutcomeUnknown) when nothing is there:
// a stalled server may still run it.
func TestSettle(t *testing.T) {
	s := mustOpen(t, testConfig(t), nil)
	id := uuid.Must(uuid.NewV7())
	ours := event(id, 1)
	if err := s.Append(ctxFor(t), id, 0, []store.Event{ours}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	now := time.Now()
	if err := s.settle(ctxFor(t), id, 0, ours.ID, now, serverTimeout{}); err != nil {
		t.Errorf("settle of an applied append: %v, want nil", err)
	}
	if err := s.settle(ctxFor(t), id, 0, uuid.Must(uuid.NewV7()), now, serverTimeout{}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("settle of an append whose version another took: %v, want ErrConflict", err)
	}
	err := s.settle(ctxFor(t), id, 1, uuid.Must(uuid.NewV7()), now, serverTimeout{})
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrOutcomeUnknown) {
		t.Errorf("settle of an append the server gave up on, not applied: %v, want ErrUnavailable only", err)
	}
	err = s.settle(ctxFor(t), id, 1, uuid.Must(uuid.NewV7()), now.Add(-s.cfg.Timeout), gocql.ErrTimeoutNoResponse)
	if !errors.Is(err, store.ErrOutcomeUnknown) || !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrConflict) {
		t.Errorf("settle of an append the client gave up on, nothing there: %v, want ErrOutcomeUnknown", err)
	}

	// The client gave up (no answer): settle waits until Config.Timeout
	// after the send, here 300 ms from now, before it reads.
	start := time.Now()
	sent := start.Add(-s.cfg.Timeout + 300*time.Millisecond)
	if err := s.settle(ctxFor(t), id, 0, ours.ID, sent, gocql.ErrTimeoutNoResponse); err != nil {
		t.Errorf("settle after a client timeout: %v, want nil", err)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond {
		t.Errorf("settle after a client timeout read after %v, want ≥ 300ms", waited)
	}
}

// TestConfig: the defaults, and what Open refuses before connecting.
func TestConfig(t *testing.T) {
	c, err := Config{Hosts: []string{"h"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Keyspace != "orderd" || c.Consistency != gocql.LocalQuorum || c.SerialConsistency != gocql.LocalSerial ||
		c.CDCTTL != 7*24*time.Hour || c.Timeout != DefaultTimeout || c.Replication != DefaultReplication {
		t.Errorf("defaults: %+v", c)
	}
	for name, c := range map[string]Config{
		"no hosts":           {},
		"keyspace injection": {Hosts: []string{"h"}, Keyspace: "x; DROP KEYSPACE y"},
		"keyspace too long":  {Hosts: []string{"h"}, Keyspace: strings.Repeat("k", 49)},
		"serial not serial":  {Hosts: []string{"h"}, SerialConsistency: gocql.Quorum},
		"CDC TTL under 1s":   {Hosts: []string{"h"}, CDCTTL: time.Millisecond},
	} {
		if _, err := OpenStore(context.Background(), c, Options{}); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

// TestUncertain: which failures of a transaction are settled by a read.
func TestUncertain(t *testing.T) {
	for err, want := range map[error]bool{
		context.DeadlineExceeded:                          true,
		fmt.Errorf("x: %w", context.Canceled):             true,
		gocql.ErrTimeoutNoResponse:                        true,
		gocql.ErrConnectionClosed:                         true,
		gocql.ErrSessionClosed:                            false,
		fmt.Errorf("x: %w", gocql.ErrNoConnections):       false,
		fmt.Errorf("x: %w", gocql.ErrNoConnectionsInPool): false,
	} {
		if got := uncertain(err); got != want {
			t.Errorf("uncertain(%v) = %v, want %v", err, got, want)
		}
	}
}

// TestMintTries: a mint whose try was not answered is sent again, the same
// batch, until one succeeds (nil, the events stored once) or the store's
// timeout has passed (ErrOutcomeUnknown, never a conflict); a first try
// refused before it ran fails at once, as the cluster's failure, with
// nothing stored.
func TestMintTries(t *testing.T) {
	cfg := testConfig(t)
	cfg.Timeout = 2 * time.Second // the time a mint never answered takes
	s := mustOpen(t, cfg, nil)
	unavailable := frameError[gocql.RequestErrUnavailable](gocql.ErrCodeUnavailable, "Cannot achieve consistency level QUORUM")
	for _, c := range []struct {
		name    string
		fault   func(try int) error
		stored  bool
		want    error // nil, or what the error must wrap
		notWant error
	}{
		{"timed out once", func(try int) error {
			if try == 0 {
				return gocql.ErrTimeoutNoResponse
			}
			return nil
		}, true, nil, nil},
		{"timed out, then refused, then applied", func(try int) error {
			switch try {
			case 0:
				return gocql.ErrTimeoutNoResponse
			case 1:
				return unavailable
			}
			return nil
		}, true, nil, nil},
		{"never answered", func(int) error { return gocql.ErrTimeoutNoResponse }, false, store.ErrOutcomeUnknown, store.ErrConflict},
		{"refused at once", func(int) error { return unavailable }, false, store.ErrUnavailable, store.ErrOutcomeUnknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			s.mintFault = c.fault
			defer func() { s.mintFault = nil }()
			id := uuid.Must(uuid.NewV7())
			evs := []store.Event{event(id, 1), event(id, 2)}
			start := time.Now()
			err := s.Mint(ctxFor(t), id, evs)
			took := time.Since(start)
			switch {
			case c.want == nil && err != nil:
				t.Fatalf("Mint: %v, want nil", err)
			case c.want != nil && (!errors.Is(err, c.want) || errors.Is(err, c.notWant)):
				t.Fatalf("Mint: %v, want %v and not %v", err, c.want, c.notWant)
			}
			if c.want == store.ErrUnavailable && took > s.cfg.Timeout/2 {
				t.Errorf("a refused mint answered after %v, want at once", took)
			}
			if took > 2*s.cfg.Timeout {
				t.Errorf("Mint took %v, want within the store's timeout (%v) and a try", took, s.cfg.Timeout)
			}
			got, err := s.Load(ctxFor(t), id, 0)
			if err != nil {
				t.Fatal(err)
			}
			if stored := len(got) == 2 && got[0].ID == evs[0].ID && got[1].ID == evs[1].ID; stored != c.stored {
				t.Errorf("events stored: %v, want %v (%d read back)", stored, c.stored, len(got))
			}
		})
	}
}
