package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func mustOpen(t testing.TB, path string, up store.Upcaster) *Store {
	t.Helper()
	return mustOpenWith(t, path, Options{Upcaster: up})
}

func mustOpenWith(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	opts.Logger = zaptest.NewLogger(t)
	s, err := OpenStore(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, up store.Upcaster) store.Store {
		return mustOpen(t, filepath.Join(t.TempDir(), "events.db"), up)
	}, storetest.Capabilities{Positions: true})
}

func TestRestart(t *testing.T) {
	storetest.RunRestart(t, func(t *testing.T) (store.Store, func() store.Store) {
		path := filepath.Join(t.TempDir(), "events.db")
		return mustOpen(t, path, nil), func() store.Store { return mustOpen(t, path, nil) }
	}, storetest.Capabilities{Positions: true})
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

// TestExact checks what this backend promises beyond the suite: data bytes
// and nanoseconds survive exactly, and empty metadata reads back as nil.
func TestExact(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "events.db"), nil)
	id := uuid.Must(uuid.NewV7())
	e := event(id, 1)
	e.Data = json.RawMessage(`{ "b" : 1,"a":[ ] }`)
	e.Timestamp = time.Date(2262, 4, 11, 23, 47, 16, 854775807, time.UTC) // the last representable nanosecond
	e.Metadata = map[string]string{}
	if err := s.Append(t.Context(), id, 0, []store.Event{e}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(t.Context(), id, 0)
	if err != nil || len(got) != 1 {
		t.Fatalf("Load = %d events, %v", len(got), err)
	}
	if string(got[0].Data) != string(e.Data) {
		t.Errorf("Data %q, want %q", got[0].Data, e.Data)
	}
	if got[0].Timestamp != e.Timestamp { // == also compares the location
		t.Errorf("Timestamp %v, want %v", got[0].Timestamp, e.Timestamp)
	}
	if got[0].Metadata != nil {
		t.Errorf("Metadata %#v, want nil", got[0].Metadata)
	}
}

// TestSettings checks that the dsn took effect, on a path that would break
// an unescaped file: URI.
func TestSettings(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "odd dir?x=1#y%20")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "events.db")
	s := mustOpen(t, path, nil)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at its path: %v", err)
	}
	ctx := t.Context()
	var mode string
	var sync, busy, queryOnly int
	for _, q := range []struct {
		db   *sql.DB
		sql  string
		dest any
	}{
		{s.w, "PRAGMA journal_mode", &mode},
		{s.w, "PRAGMA synchronous", &sync},
		{s.w, "PRAGMA busy_timeout", &busy},
		{s.r, "PRAGMA query_only", &queryOnly},
	} {
		if err := q.db.QueryRowContext(ctx, q.sql).Scan(q.dest); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if mode != "wal" || sync != 2 || busy != 5000 || queryOnly != 1 {
		t.Errorf("journal_mode %s, synchronous %d, busy_timeout %d, reader query_only %d; want wal, 2 (FULL), 5000, 1",
			mode, sync, busy, queryOnly)
	}
}

// TestRefused covers inputs only this backend checks, and that a refused
// request in a batch does not stop the others.
func TestRefused(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "events.db"), nil)
	ctx := t.Context()
	id := uuid.Must(uuid.NewV7())
	stored := event(id, 1)
	if err := s.Append(ctx, id, 0, []store.Event{stored}); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(*store.Event){
		"data not JSON":        func(e *store.Event) { e.Data = json.RawMessage(`{"a":`) },
		"zero timestamp":       func(e *store.Event) { e.Timestamp = time.Time{} },
		"schema version 0":     func(e *store.Event) { e.SchemaVersion = 0 },
		"reused event id":      func(e *store.Event) { e.ID = stored.ID },
		"empty aggregate type": func(e *store.Event) { e.AggregateType = "" },
	}
	for name, spoil := range bad {
		// The spoilt event comes second, so that for a reused id the first
		// one was already inserted and must be rolled back.
		evs := []store.Event{event(id, 2), event(id, 3)}
		spoil(&evs[1])
		if err := s.Append(ctx, id, 1, evs); err == nil || errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: Append = %v, want a non-conflict error", name, err)
		}
	}
	if evs, err := s.Load(ctx, id, 0); err != nil || len(evs) != 1 {
		t.Fatalf("Load after refused appends = %d events, %v; want 1", len(evs), err)
	}
	if err := s.Append(ctx, id, 1, []store.Event{event(id, 2)}); err != nil {
		t.Errorf("Append after refused ones: %v", err)
	}
}

// holdWriteLock takes SQLite's write lock from another connection, as
// another process would, until the returned function is called. It makes
// the writer goroutine wait in BEGIN, so tests can queue requests behind it
// without depending on timing. The store must have been opened with
// openHeld, so that the writer waits longer than any test holds the lock.
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(path, defaultBusyTimeout))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	release = sync.OnceFunc(func() {
		if _, err := conn.ExecContext(context.Background(), "COMMIT"); err != nil {
			t.Error(err)
		}
		conn.Close()
	})
	t.Cleanup(release) // runs before the store's Close, which needs the lock
	return release
}

// openHeld opens a store whose writer waits in BEGIN for as long as a test
// may hold the write lock.
func openHeld(t *testing.T, path string) *Store {
	t.Helper()
	return mustOpenWith(t, path, Options{busyTimeout: 2 * lockGuard})
}

// lockGuard bounds how long a test waits for the writer's queue to fill.
// It only turns a hang into a failure; the machine may be slow (-race).
const lockGuard = 30 * time.Second

// waitTaken waits until the writer took every queued append. Only a hang
// guard is timed.
func waitTaken(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(lockGuard)
	for len(s.reqs) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d appends still queued", len(s.reqs))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommit checks that appends queued while a transaction is under
// way share the next one.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	s := openHeld(t, path)
	release := holdWriteLock(t, path)

	const n = 64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			id := uuid.Must(uuid.NewV7())
			if err := s.Append(t.Context(), id, 0, []store.Event{event(id, 1), event(id, 2)}); err != nil {
				t.Error(err)
			}
		})
	}
	// Once every append was handed over, the writer holds at most one batch,
	// stuck in BEGIN, and all the others wait in the queue, where the next
	// batch takes them at once.
	deadline := time.Now().Add(lockGuard)
	for s.accepted.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d appends handed to the writer, want %d", s.accepted.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()

	commits := s.commits.Load()
	t.Logf("%d appends in %d transactions", n, commits)
	if commits > 2 {
		t.Errorf("%d appends took %d transactions, want at most 2", n, commits)
	}
	if h, err := s.Head(t.Context()); err != nil || h != 2*n {
		t.Errorf("Head = %d, %v; want %d", h, err, 2*n)
	}
}

// TestDoneContextNotWritten: a request whose ctx ends before it is written,
// whether it is already in the writer's hands or still queued, is not
// written, and the caller is told so; the rest of the batch commits.
func TestDoneContextNotWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	s := openHeld(t, path)
	release := holdWriteLock(t, path)

	// Requests are queued by hand, as Append does, so that the test knows
	// that each was sent. The writer takes inHand into a batch that waits in
	// BEGIN until release; queued joins that batch or the next one. Either
	// way both ctxs end before the requests are written.
	ctx, cancel := context.WithCancel(t.Context())
	inHand := enqueue(t, s, ctx)
	waitTaken(t, s)
	queued := enqueue(t, s, ctx)
	other := enqueue(t, s, t.Context())
	cancel()
	release()

	for name, r := range map[string]*appendReq{"in hand": inHand, "queued": queued} {
		if err := <-r.done; !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want context.Canceled", name, err)
		}
		if evs, err := s.Load(t.Context(), r.id, 0); err != nil || len(evs) != 0 {
			t.Errorf("%s: Load = %d events, %v; want none", name, len(evs), err)
		}
	}
	if err := <-other.done; err != nil {
		t.Errorf("request with a live ctx: %v", err)
	}
}

// enqueue queues an append of one event to a new aggregate, as Append does.
func enqueue(t *testing.T, s *Store, ctx context.Context) *appendReq {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	return enqueueEvents(t, s, ctx, id, 0, []store.Event{event(id, 1)})
}

func enqueueEvents(t *testing.T, s *Store, ctx context.Context, id uuid.UUID, expected int64, evs []store.Event) *appendReq {
	t.Helper()
	rows, err := encode(id, expected, evs)
	if err != nil {
		t.Fatal(err)
	}
	r := &appendReq{ctx: ctx, id: id, expected: expected, rows: rows, done: make(chan error, 1)}
	s.reqs <- r
	return r
}

// TestBatchIsolation: a request that fails halfway through its inserts is
// rolled back alone; the requests batched with it commit.
func TestBatchIsolation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	s := openHeld(t, path)
	id := uuid.Must(uuid.NewV7())
	stored := event(id, 1)
	if err := s.Append(t.Context(), id, 0, []store.Event{stored}); err != nil {
		t.Fatal(err)
	}

	// Whichever batch the bad request lands in, it shares it with a good
	// one: first if the writer drains it into the batch stuck in BEGIN,
	// otherwise after, queued behind it until release.
	release := holdWriteLock(t, path)
	first := enqueue(t, s, t.Context())
	waitTaken(t, s)
	before := enqueue(t, s, t.Context())
	evs := []store.Event{event(id, 2), event(id, 3)}
	evs[1].ID = stored.ID // fails on insert, after event 2 went in
	bad := enqueueEvents(t, s, t.Context(), id, 1, evs)
	conflict := enqueueEvents(t, s, t.Context(), id, 0, []store.Event{event(id, 1)})
	after := enqueue(t, s, t.Context())
	release()

	for name, r := range map[string]*appendReq{"first": first, "before": before, "after": after} {
		if err := <-r.done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := <-bad.done; err == nil || errors.Is(err, store.ErrConflict) {
		t.Errorf("reused event id: %v, want a non-conflict error", err)
	}
	if err := <-conflict.done; !errors.Is(err, store.ErrConflict) {
		t.Errorf("stale version: %v, want ErrConflict", err)
	}
	if got, err := s.Load(t.Context(), id, 0); err != nil || len(got) != 1 {
		t.Errorf("Load = %d events, %v; want the 1 stored before", len(got), err)
	}
}

func BenchmarkAppend(b *testing.B) {
	s := mustOpen(b, filepath.Join(b.TempDir(), "events.db"), nil)
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	var seq int64
	for b.Loop() {
		if err := s.Append(ctx, id, seq, []store.Event{event(id, seq+1)}); err != nil {
			b.Fatal(err)
		}
		seq++
	}
	b.ReportMetric(float64(seq)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkAppendParallel(b *testing.B) {
	s := mustOpen(b, filepath.Join(b.TempDir(), "events.db"), nil)
	ctx := context.Background()
	// RunParallel starts parallelism×GOMAXPROCS goroutines; aim at 64.
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	var events atomic.Int64
	commits := s.commits.Load()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := uuid.Must(uuid.NewV7()) // one aggregate per goroutine: no conflicts
		var seq int64
		for pb.Next() {
			if err := s.Append(ctx, id, seq, []store.Event{event(id, seq+1)}); err != nil {
				b.Error(err)
				return
			}
			seq++
		}
		events.Add(seq)
	})
	b.StopTimer()
	b.ReportMetric(float64(events.Load())/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(events.Load())/float64(s.commits.Load()-commits), "events/commit")
}

// TestOneProcessPerFile: a second Store on a file that one holds is refused
// with an error that says why; once the first closes, the file opens again.
func TestOneProcessPerFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	first := mustOpen(t, path, nil)
	if s, err := OpenStore(path, Options{}); err == nil {
		s.Close()
		t.Fatal("a second Open of a file in use succeeded")
	} else if !strings.Contains(err.Error(), "in use by process "+strconv.Itoa(os.Getpid())) {
		t.Errorf("second Open: %v, want it to name the process that holds the file", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, path, nil)
}
