package scylla_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/store"
)

// pipeline returns n events in which orders move through their lifecycle
// staggered, as a busy feed has them (the same shape as the SQLite views'
// benchmark): at each step a new order is created while the three before
// it are confirmed, shipped and delivered.
func pipeline(b *testing.B, n int) []store.Event {
	f := &feed{t: b}
	items := []aggregate.Item{{ProductID: product, Quantity: 2}, {ProductID: uuid.Must(uuid.NewV7()), Quantity: 1}}
	var orders []uuid.UUID
	for step := 0; len(f.events) < n; step++ {
		orders = append(orders, uuid.Must(uuid.NewV7()))
		for age := 0; age < 4 && age <= step && len(f.events) < n; age++ {
			id := orders[step-age]
			var ev aggregate.Event
			switch age {
			case 0:
				ev = aggregate.OrderCreated{CustomerID: customer, Items: items, CreatedAt: at(step)}
			case 1:
				ev = aggregate.OrderConfirmed{ConfirmedAt: at(step)}
			case 2:
				ev = aggregate.OrderShipped{TrackingNumber: "T-1", Carrier: "DHL", ShippedAt: at(step)}
			case 3:
				ev = aggregate.OrderDelivered{DeliveredAt: at(step)}
			}
			f.add(aggregate.OrderType, id, int64(age+1), ev)
		}
	}
	return f.events
}

// BenchmarkProject measures projection throughput into Cassandra: each
// iteration projects one batch, as a CDC consumer hands them over. Every
// row write is a lightweight transaction (four round trips of Paxos) plus
// an upsert of the customer's list, so throughput comes from working on
// many aggregates at once, and a batch that holds several events of one
// order costs one round for them all.
//
// Apache Cassandra 5.0, single node on loopback, 2 vCPU (client, node and
// other work sharing them; load average 9 to 15), -benchtime 10s, two runs:
// batch=1 160-210 events/s, batch=16 2,000-2,550 events/s, batch=256
// 5,000-5,650 events/s.
func BenchmarkProject(b *testing.B) {
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			e := newEnv(b)
			v := e.views(nil)
			events := pipeline(b, b.N*size)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := v.Project(ctx, events[i*size:(i+1)*size]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkCommandToProjection is the CQL path of a command as far as it
// can run without ScyllaDB's CDC log: each iteration appends one event
// (the store's lightweight transaction) and projects it (the read model's),
// one order at a time, and it reports the latency of the pair. On ScyllaDB
// the CDC confidence window and a poll delay come on top; Cassandra has no
// CDC log to measure them on.
func BenchmarkCommandToProjection(b *testing.B) {
	e := newEnv(b)
	v := e.views(nil)
	events := pipeline(b, b.N)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for _, ev := range events[:b.N] {
		t := time.Now()
		ev.Position = 0
		if err := e.store.Append(ctx, ev.AggregateID, ev.Sequence-1, []store.Event{ev}); err != nil {
			b.Fatal(err)
		}
		if err := v.Project(ctx, []store.Event{ev}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
