package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// rig is a relay on the real embedded store and ledger, publishing Widget
// events to a topic of its own on the real broker.
type rig struct {
	t       testing.TB
	brokers []string
	topic   string
	events  *sqlite.Store
	ledger  *sqlite.Ledger
	kafka   *relay.Kafka
	metrics *relay.Metrics
	reg     *prometheus.Registry
	relay   *relay.Relay
	seq     map[uuid.UUID]int64
}

func newRig(t *testing.T, topicConfigs ...kafka.ConfigEntry) *rig {
	return newRigTB(t, topicConfigs...)
}

func newRigTB(t testing.TB, topicConfigs ...kafka.ConfigEntry) *rig {
	t.Helper()
	brokers := kafkatest.Brokers(t)
	dir := t.TempDir()
	events, err := sqlite.OpenStore(filepath.Join(dir, "events.db"), sqlite.Options{FeedBatch: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { events.Close() })
	ledger, err := sqlite.OpenLedger(filepath.Join(dir, "relay.db"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ledger.Close() })
	k, err := relay.NewKafka(relay.KafkaConfig{Brokers: brokers}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	r := &rig{t: t, brokers: brokers, topic: kafkatest.Topic(t, brokers, 3, topicConfigs...),
		events: events, ledger: ledger, kafka: k, reg: prometheus.NewRegistry(), seq: map[uuid.UUID]int64{}}
	r.metrics = relay.NewMetrics(r.reg)
	r.relay = r.newRelay(r.kafka)
	return r
}

// newRelay returns another relay on the rig's ledger and store: another
// instance, as far as the ledger can tell.
func (r *rig) newRelay(pub relay.Publisher) *relay.Relay {
	return relay.New(r.events, pub, r.ledger, relay.Config{
		Topics:       relay.Topics{ByType: map[string]string{"Widget": r.topic}},
		RetryInitial: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		RequestPoll: 100 * time.Millisecond, RequestWait: 20 * time.Millisecond,
	}, zap.NewNop(), r.metrics)
}

// appendEvent appends the next event of aggregate id with a payload of
// about size bytes, and returns it as the feed hands it (with its
// position).
func (r *rig) appendEvent(id uuid.UUID, size int) store.Event {
	r.t.Helper()
	r.seq[id]++
	data, _ := json.Marshal(map[string]any{"n": r.seq[id], "pad": strings.Repeat("x", size)})
	e := store.Event{
		ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: "Widget", Sequence: r.seq[id],
		Type: "WidgetChanged", SchemaVersion: 1, Data: data, CausationID: uuid.New(), CorrelationID: uuid.New(),
		Timestamp: time.Now().UTC(),
	}
	ctx := context.Background()
	if err := r.events.Append(ctx, id, r.seq[id]-1, []store.Event{e}); err != nil {
		r.t.Fatal(err)
	}
	stored, err := r.events.Load(ctx, id, r.seq[id]-1)
	if err != nil || len(stored) != 1 {
		r.t.Fatalf("load back %s/%d: %v, %v", id, r.seq[id], stored, err)
	}
	return stored[0]
}

// handle hands a batch to the rig's relay as the feed would.
func (r *rig) handle(rl *relay.Relay, events ...store.Event) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := rl.Handle(ctx, events); err != nil {
		r.t.Fatalf("Handle: %v", err)
	}
}

// serve runs rl over the store's feed until the test ends or stop is
// called, and checks that it stopped cleanly.
func (r *rig) serve(rl *relay.Relay) (stop func()) {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rl.Serve(ctx, r.events) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				r.t.Errorf("Serve: %v", err)
			}
		})
	}
	r.t.Cleanup(stop)
	return stop
}

// caughtUp waits until the relay has handled every committed event.
func (r *rig) caughtUp() {
	r.t.Helper()
	waitFor(r.t, "the relay to catch up", func() bool {
		lag, err := r.events.Lag(context.Background(), relay.Consumer)
		return err == nil && lag.Events == 0
	})
}

// consumeAll reads every record on the rig's topic, duplicates included.
func (r *rig) consumeAll() []kafka.Message {
	r.t.Helper()
	total := int64(0)
	for _, n := range kafkatest.EndOffsets(r.t, r.brokers, r.topic) {
		total += n
	}
	return kafkatest.Consume(r.t, r.brokers, r.topic, int(total), 30*time.Second)
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// checkOrder fails unless, per key, no sequence appears before the one
// below it has, and every key has exactly sequences 1..want[key]. It
// returns the number of duplicate records (at-least-once delivery).
func checkOrder(t testing.TB, msgs []kafka.Message, want map[uuid.UUID]int64) int {
	t.Helper()
	top := map[string]int64{}
	seen := map[string]bool{}
	dups := 0
	for _, m := range msgs {
		key := string(m.Key)
		seq, err := strconv.ParseInt(header(m, "ce_sequence"), 10, 64)
		if err != nil {
			t.Fatalf("record without ce_sequence: %+v", m.Headers)
		}
		if seq > top[key]+1 {
			t.Fatalf("key %s: sequence %d published before %d", key, seq, top[key]+1)
		}
		top[key] = max(top[key], seq)
		if id := header(m, "ce_id"); seen[id] {
			dups++
		} else {
			seen[id] = true
		}
	}
	for id, n := range want {
		if top[id.String()] != n {
			t.Errorf("key %s: %d events on the topic, want %d", id, top[id.String()], n)
		}
	}
	if len(top) != len(want) {
		t.Errorf("%d keys on the topic, want %d", len(top), len(want))
	}
	return dups
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gauge returns the value of the series name whose one label has value
// label (or of the unlabelled series when label is empty), 0 if absent.
func gauge(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// TestHandlePublishesInOrder: interleaved events of several aggregates in
// one batch reach the topic in order per key, each once, as CloudEvents;
// the batch handed again is published again, still in order.
func TestHandlePublishesInOrder(t *testing.T) {
	r := newRig(t)
	ids := make([]uuid.UUID, 5)
	for i := range ids {
		ids[i] = uuid.New()
	}
	var batch []store.Event
	for range 20 {
		for _, id := range ids {
			batch = append(batch, r.appendEvent(id, 50))
		}
	}
	first := batch[0]
	r.handle(r.relay, batch...)
	want := map[uuid.UUID]int64{ids[0]: 20, ids[1]: 20, ids[2]: 20, ids[3]: 20, ids[4]: 20}
	msgs := kafkatest.Consume(t, r.brokers, r.topic, 100, 30*time.Second)
	if dups := checkOrder(t, msgs, want); dups != 0 {
		t.Errorf("%d duplicates in a run without failures", dups)
	}
	for _, m := range msgs {
		if header(m, "ce_id") != first.ID.String() {
			continue
		}
		want := map[string]string{
			"ce_specversion": "1.0", "ce_source": "orderd", "ce_type": "WidgetChanged", "ce_subject": first.AggregateID.String(),
			"content-type": "application/json", "ce_time": first.Timestamp.Format(time.RFC3339Nano), "ce_sequence": "1",
			"ce_schemaversion": "1", "ce_aggregatetype": "Widget",
			"ce_correlationid": first.CorrelationID.String(), "ce_causationid": first.CausationID.String(),
		}
		for k, v := range want {
			if got := header(m, k); got != v {
				t.Errorf("header %s = %q, want %q", k, got, v)
			}
		}
		if string(m.Value) != string(first.Data) || string(m.Key) != first.AggregateID.String() {
			t.Errorf("record %s / %s, want the event's data keyed by its aggregate", m.Key, m.Value)
		}
	}

	// Redelivery (after a crash, say): published again, in order.
	r.handle(r.relay, batch[:50]...)
	msgs = kafkatest.Consume(t, r.brokers, r.topic, 150, 30*time.Second)
	if dups := checkOrder(t, msgs, want); dups != 50 {
		t.Errorf("%d duplicates after handing 50 events again, want 50", dups)
	}
	if letters, _ := r.ledger.List(context.Background(), 0, 10); len(letters) != 0 {
		t.Errorf("dead letters after a clean run: %+v", letters)
	}
}

// TestHandleDeadLetters: an event over the topic's size limit is
// dead-lettered, the later events of its aggregate are parked behind it,
// other aggregates flow. Handing the batch again changes no letter, and
// an earlier event of the blocked aggregate handed again is published
// again, not parked.
func TestHandleDeadLetters(t *testing.T) {
	r := newRig(t, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "4096"})
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	rl := relay.New(r.events, r.kafka, r.ledger, relay.Config{
		Topics: relay.Topics{ByType: map[string]string{"Widget": r.topic}},
		Now:    func() time.Time { return t0 },
	}, zap.NewNop(), r.metrics)
	big, small := uuid.New(), uuid.New()
	b1 := r.appendEvent(big, 10)
	batch := []store.Event{r.appendEvent(small, 10), b1}
	r.handle(rl, batch...)
	failed := r.appendEvent(big, 6000)
	batch = []store.Event{r.appendEvent(small, 10), failed, r.appendEvent(small, 10)}
	parked := r.appendEvent(big, 10)
	batch = append(batch, parked, r.appendEvent(small, 10))
	r.handle(rl, batch...)

	ctx := context.Background()
	letters, err := r.ledger.List(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 2 || letters[0].EventID != failed.ID || letters[0].State != relay.Failed ||
		letters[1].EventID != parked.ID || letters[1].State != relay.Parked || letters[0].Error == "" {
		t.Fatalf("dead letters %+v", letters)
	}
	if letters[0].Position != failed.Position || !letters[0].FirstFailedAt.Equal(t0) || letters[0].Attempts != 1 {
		t.Errorf("failed letter %+v: want the event's position as id, the relay's clock, 1 attempt", letters[0])
	}
	if n := gauge(t, r.reg, "orderd_relay_dead_lettered_total", "failed"); n != 1 {
		t.Errorf("dead_lettered_total{failed} = %v, want 1", n)
	}
	moved := letters[0]
	moved.Attempts, moved.Error = 5, "moved on"
	if err := r.ledger.Update(ctx, moved); err != nil {
		t.Fatal(err)
	}

	// The same batches again, as after a crash, through a relay that reads
	// the blocked aggregates from the ledger.
	again := r.newRelay(r.kafka)
	r.handle(again, b1)
	r.handle(again, batch...)
	after, err := r.ledger.List(ctx, 0, 10)
	if err != nil || len(after) != 2 || after[0].Attempts != 5 || after[0].Error != "moved on" || after[1].State != relay.Parked {
		t.Fatalf("dead letters after a redelivery: %+v, %v; want them as they were", after, err)
	}
	msgs := r.consumeAll()
	if dups := checkOrder(t, msgs, map[uuid.UUID]int64{small: 4, big: 1}); dups != 4 {
		t.Errorf("%d duplicates, want 4: big's first and small's last 3, handed again", dups)
	}
}

// TestHandleWithoutPositions: events of a store without a global order
// (CQL) get dead-letter ids derived from their event ids, exact in JSON,
// the same at every delivery.
func TestHandleWithoutPositions(t *testing.T) {
	r := newRig(t, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "4096"})
	big := uuid.New()
	b1, b2 := r.appendEvent(big, 6000), r.appendEvent(big, 10)
	b1.Position, b2.Position = 0, 0
	r.handle(r.relay, b1, b2)
	r.handle(r.newRelay(r.kafka), b1, b2)
	letters, err := r.ledger.OfAggregate(context.Background(), big)
	if err != nil || len(letters) != 2 || letters[0].State != relay.Failed || letters[1].State != relay.Parked {
		t.Fatalf("dead letters: %+v, %v", letters, err)
	}
	for _, l := range letters {
		if l.Position < 1 || l.Position >= 1<<53 {
			t.Errorf("dead letter id %d is not in [1, 2^53)", l.Position)
		}
	}
	if letters[0].Position == letters[1].Position {
		t.Errorf("two events share dead letter id %d", letters[0].Position)
	}
}

// TestServeConcurrentWriters: 20 aggregates × 50 events appended by
// concurrent writers while the relay serves the store's feed all arrive,
// in order per key; a relay started again on the same feed publishes
// nothing again.
func TestServeConcurrentWriters(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.relay.Serve(ctx, r.events) }()

	want := map[uuid.UUID]int64{}
	var wg sync.WaitGroup
	for range 20 {
		id := uuid.New()
		want[id] = 50
		wg.Go(func() {
			for seq := int64(1); seq <= 50; seq++ {
				data := fmt.Appendf(nil, `{"n":%d}`, seq)
				e := store.Event{ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: "Widget", Sequence: seq,
					Type: "WidgetChanged", SchemaVersion: 1, Data: data, CausationID: uuid.New(), CorrelationID: uuid.New(),
					Timestamp: time.Now().UTC()}
				if err := r.events.Append(ctx, id, seq-1, []store.Event{e}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	r.caughtUp()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	msgs := r.consumeAll()
	dups := checkOrder(t, msgs, want)
	t.Logf("%d records, %d duplicates", len(msgs), dups)

	r.serve(r.newRelay(r.kafka))
	r.caughtUp()
	if again := r.consumeAll(); len(again) != len(msgs) {
		t.Errorf("%d records after a restart, %d before: the restart published again", len(again), len(msgs))
	}
}

// TestServeReloadsBlocked: a relay that serves again (its instance took the
// lease back) reads the blocked set afresh, so it parks the events of an
// aggregate that another instance dead-lettered in between rather than
// publishing them from what it knew before.
func TestServeReloadsBlocked(t *testing.T) {
	r := newRig(t)
	other := uuid.New()
	r.appendEvent(other, 10) // the topic is not empty, so consumeAll has something to wait for
	stop := r.serve(r.relay)
	r.caughtUp()
	stop()

	// Meanwhile, another instance's relay failed x's first event.
	x := uuid.New()
	first := r.appendEvent(x, 10)
	letter := relay.DeadLetter{Position: first.Position, EventID: first.ID, AggregateID: x, AggregateType: "Widget",
		Sequence: 1, EventType: first.Type, Topic: r.topic, State: relay.Failed, Error: "failed elsewhere", Attempts: 1,
		FirstFailedAt: time.Now().UTC(), LastFailedAt: time.Now().UTC()}
	if err := r.ledger.Record(context.Background(), []relay.DeadLetter{letter}); err != nil {
		t.Fatal(err)
	}
	second := r.appendEvent(x, 10)

	r.serve(r.relay) // the same relay, serving again
	r.caughtUp()
	got, err := r.ledger.Get(context.Background(), second.Position)
	if err != nil || got.State != relay.Parked {
		t.Fatalf("x's second event: %+v, %v; want it parked behind the first", got, err)
	}
	for _, m := range r.consumeAll() {
		if string(m.Key) == x.String() {
			t.Errorf("x's event %s was published while x has a failed dead letter", header(m, "ce_id"))
		}
	}
}
