package relay_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/disktest"
)

// TestStorageFaultBoundsDuplicates runs the relay on the real broker over a
// store whose disk is full, so that the feed cannot save the relay's
// progress, under a supervisor that restarts it at once whenever it fails.
// While the fault lasts (5 s) the relay must pause rather than publish the
// same events again and again: at most one batch is published twice over
// the whole episode, and every event is published once space is freed.
func TestStorageFaultBoundsDuplicates(t *testing.T) {
	const (
		batch  = 64
		events = 10 * batch
		fault  = 5 * time.Second
	)
	brokers := kafkatest.Brokers(t)
	disk := disktest.Mount(t, 16<<20)
	st, err := sqlite.OpenStore(filepath.Join(disk, "events.db"), sqlite.Options{FeedBatch: batch, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ledger, err := sqlite.OpenLedger(filepath.Join(t.TempDir(), "relay.db"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ledger.Close() })
	k, err := relay.NewKafka(relay.KafkaConfig{Brokers: brokers}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	topic := kafkatest.Topic(t, brokers, 3)
	rl := relay.New(st, k, ledger, relay.Config{
		Topics: relay.Topics{ByType: map[string]string{"Widget": topic}}, Types: []string{"Widget"},
		RetryInitial: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	}, zaptest.NewLogger(t), nil)

	ctx := t.Context()
	for range events {
		id := uuid.Must(uuid.NewV7())
		e := store.Event{ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: "Widget", Sequence: 1,
			Type: "WidgetChanged", SchemaVersion: 1, Data: []byte(`{"n":1}`), CausationID: uuid.New(),
			CorrelationID: uuid.New(), Timestamp: time.Now().UTC()}
		if err := st.Append(ctx, id, 0, []store.Event{e}); err != nil {
			t.Fatal(err)
		}
	}

	// Fill the disk, and let a command find out, as one would.
	filler := disktest.Fill(t, disk)
	for i := 0; ; i++ {
		id := uuid.Must(uuid.NewV7())
		e := store.Event{ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: "Other", Sequence: 1,
			Type: "Filled", SchemaVersion: 1, Data: []byte(`{"pad":"` + strings.Repeat("x", 8<<10) + `"}`),
			CausationID: uuid.New(), CorrelationID: uuid.New(), Timestamp: time.Now().UTC()}
		err := st.Append(ctx, id, 0, []store.Event{e})
		if errors.Is(err, store.ErrUnavailable) {
			break
		}
		if err != nil || i > 10000 {
			t.Fatalf("append on a full disk: %v after %d appends", err, i)
		}
	}

	// A supervisor without backoff: the worst case.
	var restarts atomic.Int64
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		for sctx.Err() == nil {
			if err := rl.Serve(sctx, st); err != nil {
				restarts.Add(1)
				t.Logf("relay failed (the supervisor restarts it): %v", err)
			}
		}
	}()
	t.Cleanup(func() { stop(); <-served })

	total := func() int64 {
		var n int64
		for _, end := range kafkatest.EndOffsets(t, brokers, topic) {
			n += end
		}
		return n
	}
	time.Sleep(time.Second) // the first batch goes out, then the relay waits
	atStart := total()
	time.Sleep(fault - time.Second)
	atEnd := total()
	t.Logf("during the %s fault: %d records published (%d after 1 s), %d restarts", fault, atEnd, atStart, restarts.Load())
	if restarts.Load() > 0 {
		t.Errorf("the relay failed %d times while its progress could not be saved; it should wait", restarts.Load())
	}
	if atEnd != atStart {
		t.Errorf("the relay went on publishing while its progress could not be saved: %d records after 1 s, %d after %s", atStart, atEnd, fault)
	}

	disktest.Free(t, filler)
	msgs := kafkatest.Consume(t, brokers, topic, events, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // let strays arrive
	published := total()
	ids := map[string]int{}
	for _, m := range msgs {
		for _, h := range m.Headers {
			if h.Key == "ce_id" {
				ids[string(h.Value)]++
			}
		}
	}
	duplicates := published - int64(events)
	t.Logf("after recovery: %d records for %d events (%d distinct ids read): %d duplicates, %d restarts",
		published, events, len(ids), duplicates, restarts.Load())
	if len(ids) != events {
		t.Errorf("%d distinct events published, want %d", len(ids), events)
	}
	if duplicates > batch {
		t.Errorf("%d duplicates over the fault episode, want at most one batch (%d)", duplicates, batch)
	}
}
