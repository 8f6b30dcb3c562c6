package scylla_test

import (
	"context"
	"fmt"
	"testing"

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
