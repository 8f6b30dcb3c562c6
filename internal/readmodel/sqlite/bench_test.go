package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/store"
)

// pipeline returns n events in which orders move through their lifecycle
// staggered, as a busy feed has them: at each step a new order is created
// while the three before it are confirmed, shipped and delivered. So a
// batch touches many orders, and an order's events span adjacent batches.
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

// BenchmarkApply measures projection throughput into the SQLite views: each
// iteration applies one batch, in one transaction, as the projector does.
func BenchmarkApply(b *testing.B) {
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			v := mustOpen(b, filepath.Join(b.TempDir(), "views.db"))
			events := pipeline(b, b.N*size)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				batch := events[i*size : (i+1)*size]
				if err := v.Apply(ctx, batch, batch[len(batch)-1].Position); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
