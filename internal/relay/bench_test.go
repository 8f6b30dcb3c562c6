package relay_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

// BenchmarkRelayThroughput: b.N events of 1,000 aggregates are committed
// first; the relay then serves the store's feed, publishing the backlog
// to the real broker (3 partitions, acks from all in-sync replicas). It
// reports events/s.
func BenchmarkRelayThroughput(b *testing.B) {
	r := newBenchRig(b)
	ids := make([]uuid.UUID, 1000)
	for i := range ids {
		ids[i] = uuid.New()
	}
	// Sixteen writers, each with its own aggregates, share group commits.
	per := (b.N + 15) / 16
	var wg sync.WaitGroup
	for w := range 16 {
		mine := ids[w*len(ids)/16 : (w+1)*len(ids)/16]
		wg.Go(func() {
			seq := make([]int64, len(mine))
			for i := range per {
				a := i % len(mine)
				seq[a]++
				r.append(mine[a], seq[a], time.Now())
			}
		})
	}
	wg.Wait()
	rl := r.newRelay(r.kafka)
	b.ResetTimer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rl.Serve(ctx, r.events) }()
	r.waitCaughtUp(b)
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(16*per)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRelayDelay: events are committed at a steady 2,000/s while the
// relay runs; it reports the time from each event's decision (its
// timestamp, taken just before the append) to Kafka's acknowledgement.
func BenchmarkRelayDelay(b *testing.B) {
	r := newBenchRig(b)
	timed := &timedPublisher{Publisher: r.kafka}
	rl := relay.New(r.events, timed, r.ledger, relay.Config{
		Topics: relay.Topics{ByType: map[string]string{"Widget": r.topic}},
	}, zap.NewNop(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rl.Serve(ctx, r.events) }()

	ids := make([]uuid.UUID, 200)
	for i := range ids {
		ids[i] = uuid.New()
	}
	seq := make([]int64, len(ids))
	tick := time.NewTicker(500 * time.Microsecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		a := i % len(ids)
		seq[a]++
		r.append(ids[a], seq[a], time.Now())
	}
	r.waitCaughtUp(b)
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	d := timed.delays
	slices.Sort(d)
	ms := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

// timedPublisher records, for each acknowledged message, how long after its
// time it was acknowledged.
type timedPublisher struct {
	relay.Publisher
	mu     sync.Mutex
	delays []time.Duration
}

func (p *timedPublisher) Publish(ctx context.Context, msgs []relay.Message) error {
	err := p.Publisher.Publish(ctx, msgs)
	if err == nil {
		now := time.Now()
		p.mu.Lock()
		for _, m := range msgs {
			p.delays = append(p.delays, now.Sub(m.Time))
		}
		p.mu.Unlock()
	}
	return err
}

type benchRig struct{ *rig }

// waitCaughtUp polls the feed until the relay has handled every committed
// event; a millisecond's polling is noise next to a Kafka round trip.
func (r benchRig) waitCaughtUp(b *testing.B) {
	for {
		lag, err := r.events.Lag(context.Background(), relay.Consumer)
		if err != nil {
			b.Fatal(err)
		}
		if lag.Events == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func newBenchRig(b *testing.B) benchRig {
	b.Helper()
	return benchRig{newRigTB(b)}
}

func (r benchRig) append(id uuid.UUID, seq int64, at time.Time) {
	e := store.Event{
		ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: "Widget", Sequence: seq, Type: "WidgetChanged",
		SchemaVersion: 1, Data: []byte(`{"customer_id":"0192f3a4-5b6c-7d8e-9f01-23456789abcd","items":[{"product_id":"0192f3a4-5b6c-7d8e-9f01-23456789abce","quantity":2}],"created_at":"2026-11-25T22:26:13.257713086Z"}`),
		CausationID: uuid.New(), CorrelationID: uuid.New(), Timestamp: at.UTC(),
	}
	if err := r.events.Append(context.Background(), id, seq-1, []store.Event{e}); err != nil {
		panic(err)
	}
}
