package transfer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/cql"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/cqltest"
	"github.com/orderd/orderd/internal/store/storetest"
	"github.com/orderd/orderd/internal/transfer"
)

// openSQLite opens an event store in a fresh directory, closed at t's end.
func openSQLite(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.OpenStore(filepath.Join(t.TempDir(), "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// populate appends aggs aggregates of 1 to 7 events each, interleaved, with
// metadata, nanosecond timestamps and payloads compact and not (which the
// stream carries in base64); it returns how many events it appended.
func populate(t *testing.T, s store.Store, aggs int) int {
	t.Helper()
	ctx := context.Background()
	ids := make([]uuid.UUID, aggs)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
	}
	n := 0
	for round := range 7 {
		for i, id := range ids {
			if round >= 1+i%7 {
				continue
			}
			data := fmt.Sprintf(`{"round":%d,"i":%d}`, round, i)
			if i%5 == 0 {
				data = fmt.Sprintf("{ \"round\": %d,\n \"i\": %d }", round, i) // not compact: kept byte for byte
			}
			e := store.Event{ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: []string{"order", "customer"}[i%2],
				Sequence: int64(round + 1), Type: "Thing", SchemaVersion: 1 + i%2, Data: []byte(data),
				CausationID: uuid.New(), CorrelationID: uuid.New(), Timestamp: time.Now().UTC().Add(time.Duration(i) * time.Nanosecond),
				Metadata: map[string]string{"traceparent": "00-" + strings.Repeat("a", 32) + "-" + strings.Repeat("b", 16) + "-01"}}
			if i%3 == 0 {
				e.Metadata = nil
			}
			if err := s.Append(ctx, id, int64(round), []store.Event{e}); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	return n
}

func export(t *testing.T, lg store.Log) []byte {
	t.Helper()
	var buf bytes.Buffer
	var n transfer.Counter
	if _, err := transfer.Export(context.Background(), lg, transfer.Rows{}, &buf, time.Now(), &n); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestResume cuts an import short twice, by a stream cut in the middle of
// a line and by a context cancelled midway, and re-runs it: the target
// ends up with exactly the source's events, none twice, and a further run
// appends nothing.
func TestResume(t *testing.T) {
	src := openSQLite(t)
	total := populate(t, src, 300)
	stream := export(t, src)
	if !bytes.Contains(stream, []byte(`"data_b64"`)) || !bytes.Contains(stream, []byte(`"data":{"round"`)) {
		t.Fatalf("the stream carries no payload in base64 or none verbatim")
	}
	dst := openSQLite(t)
	ctx := context.Background()
	opt := transfer.Options{Chunk: 64, Concurrency: 8}

	cut := stream[:len(stream)/2+7]
	err := transfer.Import(ctx, dst, bytes.NewReader(cut), opt, nil)
	if err == nil {
		t.Fatal("a stream cut mid-line imported without an error")
	}
	partial, _ := dst.Count(ctx)
	if partial == 0 || partial >= int64(total) {
		t.Fatalf("after the cut stream the target holds %d of %d events", partial, total)
	}

	// A cut exactly at a line's end parses, and the missing trailer tells.
	atLine := stream[:bytes.LastIndexByte(stream[:3*len(stream)/4], '\n')+1]
	if err := transfer.Import(ctx, dst, bytes.NewReader(atLine), opt, nil); err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("a stream without its trailer: %v, want cut short", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	var c transfer.Counter
	go func() {
		for d, _ := c.Done(); d < 50; d, _ = c.Done() {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if err := transfer.Import(cctx, dst, bytes.NewReader(stream), opt, &c); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled import: %v", err)
	}

	var n transfer.Counter
	if err := transfer.Import(ctx, dst, bytes.NewReader(stream), opt, &n); err != nil {
		t.Fatal(err)
	}
	done, skipped := n.Done()
	if done+skipped != int64(total) || skipped == 0 || done == 0 {
		t.Fatalf("the re-run appended %d and skipped %d, want %d in all, some of each", done, skipped, total)
	}
	storetest.SameEvents(t, storetest.ByAggregate(t, src), storetest.ByAggregate(t, dst), false)
	if got, _ := dst.Count(ctx); got != int64(total) {
		t.Fatalf("the target holds %d events, want %d", got, total)
	}

	var again transfer.Counter
	if err := transfer.Import(ctx, dst, bytes.NewReader(stream), opt, &again); err != nil {
		t.Fatal(err)
	}
	if d, s := again.Done(); d != 0 || s != int64(total) {
		t.Fatalf("a third run appended %d and skipped %d", d, s)
	}
}

// TestImportRefuses: a stream of another format version, and an aggregate
// the target holds with another type.
func TestImportRefuses(t *testing.T) {
	src := openSQLite(t)
	populate(t, src, 20)
	stream := export(t, src)
	ctx := context.Background()
	v4 := bytes.Replace(stream, []byte(`"version":3`), []byte(`"version":4`), 1)
	if err := transfer.Import(ctx, openSQLite(t), bytes.NewReader(v4), transfer.Options{}, nil); err == nil || !strings.Contains(err.Error(), "format version 4") {
		t.Fatalf("version 4: %v", err)
	}
	other := bytes.ReplaceAll(stream, []byte(`"aggregate_type":"order"`), []byte(`"aggregate_type":"parcel"`))
	dst := openSQLite(t)
	if err := transfer.Import(ctx, dst, bytes.NewReader(other), transfer.Options{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := transfer.Import(ctx, dst, bytes.NewReader(stream), transfer.Options{}, nil); err == nil || !strings.Contains(err.Error(), "is a parcel in the store") {
		t.Fatalf("another aggregate type: %v", err)
	}
}

// TestPublishedSQLite: with the relay named as published, its progress is
// at the head after the import and it has nothing to hand; another
// consumer has every event to hand.
func TestPublishedSQLite(t *testing.T) {
	src := openSQLite(t)
	total := populate(t, src, 50)
	stream := export(t, src)
	dst := openSQLite(t)
	ctx := context.Background()
	if err := transfer.Import(ctx, dst, bytes.NewReader(stream), transfer.Options{Published: []string{"relay"}, Marker: dst}, nil); err != nil {
		t.Fatal(err)
	}
	for consumer, want := range map[string]int64{"relay": 0, "projector": int64(total)} {
		lag, err := dst.Lag(ctx, consumer)
		if err != nil || lag.Events != want {
			t.Fatalf("%s: lag %+v, %v; want %d events", consumer, lag, err, want)
		}
	}
}

// TestToCassandra imports a SQLite export into a fresh Cassandra
// keyspace, cut short once, with the relay marked as published, then
// again: the keyspace holds the source's events (timestamps to the
// millisecond) and e-mail claim rows, and on its feed the relay is handed
// nothing of them while another consumer is handed all.
func TestToCassandra(t *testing.T) {
	hosts := cqltest.Hosts(t)
	src := openSQLite(t)
	total := populate(t, src, 200)
	claimSome(t, src.EmailClaims(), 30)
	stream := exportClaims(t, src, transfer.Rows{Claims: src.EmailClaims()})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dst, err := cql.OpenStore(ctx, cql.Config{Hosts: hosts, Keyspace: cqltest.Keyspace(t, hosts), Timeout: cqltest.Timeout,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), Feed: cql.FeedOptions{HintPoll: 50 * time.Millisecond}}, cql.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	opt := transfer.Options{Chunk: 100, Published: []string{"relay"}, Marker: dst, Claims: dst.EmailClaims()}
	if err := transfer.Import(ctx, dst, bytes.NewReader(stream[:len(stream)/2]), opt, nil); err == nil {
		t.Fatal("a cut stream imported without an error")
	}
	for range 2 { // the second run writes every claim row again
		if err := transfer.Import(ctx, dst, bytes.NewReader(stream), opt, nil); err != nil {
			t.Fatal(err)
		}
	}
	storetest.SameEvents(t, storetest.ByAggregate(t, src), storetest.ByAggregate(t, dst), true)
	sameClaims(t, claimRows(t, src.EmailClaims()), claimRows(t, dst.EmailClaims()))

	var (
		mu     sync.Mutex
		handed = map[string]int{}
	)
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, c := range []string{"relay", "projector"} {
		wg.Go(func() {
			_ = dst.Subscribe(sctx, c, func(_ context.Context, evs []store.Event) error {
				mu.Lock()
				handed[c] += len(evs)
				mu.Unlock()
				return nil
			})
		})
	}
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		p := handed["projector"]
		mu.Unlock()
		lag, err := dst.Lag(ctx, "relay")
		if err != nil {
			t.Fatal(err)
		}
		if p >= total && lag.Known {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the projector was handed %d of %d events, the relay's lag %+v", p, total, lag)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	wg.Wait()
	if handed["relay"] != 0 {
		t.Fatalf("the relay was handed %d imported events, marked as published", handed["relay"])
	}
}
