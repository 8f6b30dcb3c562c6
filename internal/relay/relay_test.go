package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
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
	relaysqlite "github.com/orderd/orderd/internal/relay/sqlite"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/sqlite"
)

// rig is a relay on the real embedded store and ledger, publishing Widget
// events to a topic of its own on the real broker.
type rig struct {
	t       testing.TB
	brokers []string
	topic   string
	events  *sqlite.Store
	ledger  *relaysqlite.Ledger
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
	events, err := sqlite.Open(filepath.Join(dir, "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { events.Close() })
	ledger, err := relaysqlite.Open(filepath.Join(dir, "relay.db"), zap.NewNop())
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
	r.relay = r.newRelay()
	return r
}

func (r *rig) newRelay() *relay.Relay {
	return relay.New(r.events, r.events, r.kafka, r.ledger, relay.Config{
		Topics:       relay.Topics{ByType: map[string]string{"Widget": r.topic}},
		BatchSize:    64,
		RetryInitial: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	}, zap.NewNop(), r.metrics)
}

// appendEvent appends the next event of aggregate id with a payload of
// about size bytes.
func (r *rig) appendEvent(id uuid.UUID, size int) store.Event {
	r.t.Helper()
	r.seq[id]++
	data, _ := json.Marshal(map[string]any{"n": r.seq[id], "pad": strings.Repeat("x", size)})
	e := store.Event{
		ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: "Widget", Sequence: r.seq[id],
		Type: "WidgetChanged", SchemaVersion: 1, Data: data, CausationID: uuid.New(), CorrelationID: uuid.New(),
		Timestamp: time.Now().UTC(),
	}
	if err := r.events.Append(context.Background(), id, r.seq[id]-1, []store.Event{e}); err != nil {
		r.t.Fatal(err)
	}
	return e
}

// serve runs the relay until it has reached the store's head, then stops
// it and checks it stopped cleanly.
func (r *rig) serve(rl *relay.Relay) {
	r.t.Helper()
	head, err := r.events.Head(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rl.Serve(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for rl.Position() < head {
		if time.Now().After(deadline) {
			cancel()
			r.t.Fatalf("relay at %d after 60s, head %d", rl.Position(), head)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		r.t.Fatalf("Serve: %v", err)
	}
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
func checkOrder(t *testing.T, msgs []kafka.Message, want map[uuid.UUID]int64) int {
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

// TestRelayPublishesInOrder: interleaved events of several aggregates reach
// the topic in order per key, each once, as CloudEvents; a restart resumes
// from the checkpoint without publishing anything again.
func TestRelayPublishesInOrder(t *testing.T) {
	r := newRig(t)
	ids := make([]uuid.UUID, 5)
	for i := range ids {
		ids[i] = uuid.New()
	}
	var first store.Event
	for n := range 20 {
		for _, id := range ids {
			if e := r.appendEvent(id, 50); n == 0 && id == ids[0] {
				first = e
			}
		}
	}
	r.serve(r.relay)
	msgs := kafkatest.Consume(t, r.brokers, r.topic, 100, 30*time.Second)
	if dups := checkOrder(t, msgs, map[uuid.UUID]int64{ids[0]: 20, ids[1]: 20, ids[2]: 20, ids[3]: 20, ids[4]: 20}); dups != 0 {
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

	// More events, and a new relay on the same ledger: only they go out.
	for _, id := range ids[:2] {
		r.appendEvent(id, 50)
	}
	r.serve(r.newRelay())
	ends := kafkatest.EndOffsets(t, r.brokers, r.topic)
	total := int64(0)
	for _, n := range ends {
		total += n
	}
	if total != 102 {
		t.Errorf("%d records on the topic after a restart, want 102 (nothing republished)", total)
	}
}

// TestRelayDeadLetters: an event over the topic's size limit is
// dead-lettered, the later events of its aggregate are parked behind it,
// other aggregates flow; once the limit is raised, a replay publishes them
// in order and the aggregate flows again.
func TestRelayDeadLetters(t *testing.T) {
	r := newRig(t, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "4096"})
	big, small := uuid.New(), uuid.New()
	r.appendEvent(small, 10)
	failed := r.appendEvent(big, 6000)
	r.appendEvent(small, 10)
	parked := r.appendEvent(big, 10)
	r.appendEvent(small, 10)
	r.serve(r.relay)

	msgs := r.consumeAll()
	checkOrder(t, msgs, map[uuid.UUID]int64{small: 3})
	letters, err := r.ledger.List(context.Background(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 2 || letters[0].EventID != failed.ID || letters[0].State != relay.Failed ||
		letters[1].EventID != parked.ID || letters[1].State != relay.Parked || letters[0].Error == "" {
		t.Fatalf("dead letters %+v", letters)
	}
	if n := gauge(t, r.reg, "orderd_relay_dead_lettered_total", "failed"); n != 1 {
		t.Errorf("dead_lettered_total{failed} = %v, want 1", n)
	}

	// Still too large: the replay fails again and nothing moves.
	ctx := context.Background()
	if n, err := r.relay.Replay(ctx, letters[0].Position); !errors.Is(err, relay.ErrReplayFailed) || n != 0 {
		t.Fatalf("replay under the same limit = %d, %v; want 0, ErrReplayFailed", n, err)
	}
	again, err := r.ledger.List(ctx, 0, 10)
	if err != nil || len(again) != 2 || again[0].Attempts != 2 || again[0].State != relay.Failed || again[1].State != relay.Parked {
		t.Fatalf("after a failed replay: %+v, %v; want the letter at 2 attempts, the parked one kept", again, err)
	}
	// Discarding a failed letter drops it and releases what was parked
	// behind it.
	other := uuid.New()
	r.appendEvent(other, 6000)
	r.appendEvent(other, 10)
	r.serve(r.newRelay())
	mine, err := r.ledger.OfAggregate(ctx, other)
	if err != nil || len(mine) != 2 {
		t.Fatalf("dead letters of the second aggregate: %+v, %v", mine, err)
	}
	if n, err := r.relay.Discard(ctx, mine[0].Position); err != nil || n != 1 {
		t.Fatalf("discard = %d, %v; want the parked event published", n, err)
	}
	if left, _ := r.ledger.OfAggregate(ctx, other); len(left) != 0 {
		t.Fatalf("dead letters left after the discard: %+v", left)
	}

	kafkatest.AlterTopic(t, r.brokers, r.topic, "max.message.bytes", "1048588")
	n, err := r.relay.Replay(ctx, letters[1].Position) // any letter of the aggregate replays it from its head
	if err != nil || n != 2 {
		t.Fatalf("replay = %d, %v; want 2 published", n, err)
	}
	r.appendEvent(big, 10)
	r.serve(r.newRelay())
	msgs = r.consumeAll()
	for _, m := range msgs {
		if string(m.Key) == other.String() && header(m, "ce_sequence") != "2" {
			t.Fatalf("the discarded event of %s was published", other)
		}
	}
	var kept []kafka.Message
	for _, m := range msgs {
		if string(m.Key) != other.String() {
			kept = append(kept, m)
		}
	}
	checkOrder(t, kept, map[uuid.UUID]int64{small: 3, big: 3})
	if left, _ := r.ledger.List(ctx, 0, 10); len(left) != 0 {
		t.Fatalf("dead letters left after the replay: %+v", left)
	}
}

// TestRelayConcurrentWriters: 20 aggregates × 50 events appended by
// concurrent writers while the relay runs all arrive, in order per key.
func TestRelayConcurrentWriters(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.relay.Serve(ctx) }()

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
	msgs := kafkatest.Consume(t, r.brokers, r.topic, 1000, 60*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	dups := checkOrder(t, msgs, want)
	t.Logf("%d records, %d duplicates", len(msgs), dups)
}

// gauge returns the value of the series name whose one label has value
// label (or of the unlabelled series when label is empty), 0 if absent.
func gauge(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
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

// TestRelayDeliver: events pushed by a feed with its own progress (the CDC
// log) are published, dead-lettered and parked exactly as Serve does; an
// event handed again is skipped, one the feed lost is loaded from the
// store, in order; and the relay's own checkpoint does not move.
func TestRelayDeliver(t *testing.T) {
	r := newRig(t, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "4096"})
	ctx := context.Background()
	if err := r.relay.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	big, small := uuid.New(), uuid.New()
	s1 := r.appendEvent(small, 10)
	r.appendEvent(small, 10) // the feed will lose this one
	s3 := r.appendEvent(small, 10)
	b1, b2 := r.appendEvent(big, 6000), r.appendEvent(big, 10)
	// Events pushed as a CDC reader pushes them: without positions.
	unpositioned := func(es ...store.Event) []store.Event {
		for i := range es {
			es[i].Position = 0
		}
		return es
	}
	for _, push := range [][]store.Event{
		unpositioned(s1),
		unpositioned(s1), // handed again after a crash
		unpositioned(s3), // s2 never came
		unpositioned(b1, b2),
	} {
		if err := r.relay.Deliver(ctx, push); err != nil {
			t.Fatal(err)
		}
	}
	msgs := r.consumeAll()
	if dups := checkOrder(t, msgs, map[uuid.UUID]int64{small: 3}); dups != 0 {
		t.Errorf("%d duplicates: a redelivered event was published again", dups)
	}
	letters, err := r.ledger.OfAggregate(ctx, big)
	if err != nil || len(letters) != 2 || letters[0].State != relay.Failed || letters[1].State != relay.Parked {
		t.Fatalf("dead letters of the big aggregate: %+v, %v", letters, err)
	}
	if letters[0].Position >= 1<<53 {
		t.Errorf("dead letter id %d is not exact in JSON", letters[0].Position)
	}
	if cp, _ := r.ledger.Checkpoint(ctx); cp != 0 {
		t.Fatalf("Deliver moved the relay's checkpoint to %d", cp)
	}
}

// gatedPublisher holds its first Publish for a while, so that concurrent
// Deliver calls queue up behind it, and records the size of every call.
type gatedPublisher struct {
	relay.Publisher
	mu    sync.Mutex
	sizes []int
}

func (p *gatedPublisher) Publish(ctx context.Context, msgs []relay.Message) error {
	p.mu.Lock()
	first := len(p.sizes) == 0
	p.sizes = append(p.sizes, len(msgs))
	p.mu.Unlock()
	if first {
		time.Sleep(300 * time.Millisecond)
	}
	return p.Publisher.Publish(ctx, msgs)
}

// TestRelayDeliverCombines: concurrent Deliver calls, one append each as a
// CDC reader's streams make them, share Kafka round trips, and every
// aggregate's events still arrive in order.
func TestRelayDeliverCombines(t *testing.T) {
	r := newRig(t)
	gated := &gatedPublisher{Publisher: r.kafka}
	rl := relay.New(r.events, r.events, gated, r.ledger, relay.Config{
		Topics: relay.Topics{ByType: map[string]string{"Widget": r.topic}},
	}, zap.NewNop(), nil)
	ctx := context.Background()
	if err := rl.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[uuid.UUID]int64{}
	var stream [][]store.Event
	for range 20 {
		id := uuid.New()
		want[id] = 5
		var evs []store.Event
		for range 5 {
			e := r.appendEvent(id, 10)
			e.Position = 0
			evs = append(evs, e)
		}
		stream = append(stream, evs)
	}
	var wg sync.WaitGroup
	for _, evs := range stream {
		wg.Go(func() {
			for _, e := range evs { // one stream: one change after another
				if err := rl.Deliver(ctx, []store.Event{e}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if dups := checkOrder(t, r.consumeAll(), want); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	if most := slices.Max(gated.sizes); most < 2 || len(gated.sizes) >= 100 {
		t.Errorf("Kafka calls %v: 100 deliveries were not combined", gated.sizes)
	}
	t.Logf("100 deliveries in %d Kafka calls", len(gated.sizes))
}
