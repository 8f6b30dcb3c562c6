package readmodeltest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// testInstancesOutOfStep runs three instances over the same customers and
// orders at once, each out of step with the others in its own way, as
// projectors that overlap during failovers (or a lapsed holder still
// writing) do: one applies batches of three in commit order and after each
// redelivers an older batch picked at random; one applies batches of eight
// with their events reversed, and every third batch first delivers
// everything it applied so far again; one walks the aggregates in its own
// order, two events of each at a time, and ends by redelivering every
// aggregate's first batch. Each instance's own batches never skip past
// what it applied itself, so none sees a gap, but each writes versions the
// others have long passed. A watcher reads orders, customers and the
// customers' order lists meanwhile: no version may ever go back. All three
// end with the rows the events fold to.
func testInstancesOutOfStep(t *testing.T, b Backend) {
	views := []Views{b.Views, b.second(t), b.Second(t)}
	h := newHistory(t)
	customers := []uuid.UUID{uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())}
	h.register(at(0), customers[0], "ada@example.com", "Ada", "Lovelace", "")
	h.register(at(0), customers[1], "grace@example.com", "Grace", "Hopper", "")
	var orders []uuid.UUID
	product := uuid.Must(uuid.NewV7())
	for i := range 6 {
		id := uuid.Must(uuid.NewV7())
		orders = append(orders, id)
		h.create(at(1), id, customers[i%2], []aggregate.Item{{ProductID: product, Quantity: 1}})
	}
	const rounds = 8
	for i := range rounds {
		for _, id := range orders {
			h.order(at(i+2), id, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
				return o.UpdateItems([]aggregate.Item{{ProductID: product, Quantity: i + 2}}, now)
			})
		}
		for k, id := range customers {
			h.customer(at(i+2), id, func(c *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
				return c.ChangeEmail(fmt.Sprintf("c%d-%d@example.com", k, i), now)
			})
		}
	}
	for _, id := range orders {
		h.order(at(rounds+2), id, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) { return o.Confirm(now) })
	}
	events := h.events()

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))

	// Instance 1: threes in order, each followed by an older one again.
	var first [][]store.Event
	threes := chunks(events, 3)
	for i, batch := range threes {
		first = append(first, batch, threes[rng.IntN(i+1)])
	}
	// Instance 2: eights reversed; every third one after everything before it again.
	var second [][]store.Event
	for i, batch := range chunks(events, 8) {
		if i%3 == 2 {
			second = append(second, reversed(events[:i*8]))
		}
		second = append(second, reversed(batch))
	}
	// Instance 3: aggregate by aggregate in its own order, two events at a
	// time, round robin; then every aggregate's first two again.
	ids := append(slices.Clone(orders), customers...)
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	var third [][]store.Event
	for step := 0; ; step++ {
		more := false
		for _, id := range ids {
			evs := h.of(id)
			if step*2 < len(evs) {
				third = append(third, evs[step*2:min(step*2+2, len(evs))])
				more = true
			}
		}
		if !more {
			break
		}
	}
	for _, id := range ids {
		third = append(third, h.of(id)[:2])
	}
	feeds := [][][]store.Event{first, second, third}

	ctx, stop := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchAll(ctx, t, b.Views, orders, customers)
	}()
	applyAtOnce(t, views, feeds)
	stop()
	<-watched

	wantOrders, wantCustomers := fold(t, events)
	var rows []readmodel.Order
	for _, id := range orders {
		rows = append(rows, b.order(wantOrders[id]))
	}
	var custs []readmodel.Customer
	for _, id := range customers {
		custs = append(custs, b.customer(wantCustomers[id]))
	}
	for i, v := range views {
		t.Run(fmt.Sprintf("instance %d", i+1), func(t *testing.T) {
			checkRows(t, v, rows, custs)
		})
	}
}

// reversed returns events newest first, in a new slice.
func reversed(events []store.Event) []store.Event {
	out := slices.Clone(events)
	slices.Reverse(out)
	return out
}

// watchAll reads the orders, the customers and the customers' order lists
// until ctx ends, and fails t if a version it reads is below one it read
// before, for a row or for an order in a list.
func watchAll(ctx context.Context, t *testing.T, v Views, orders, customers []uuid.UUID) {
	seen := map[string]int64{}
	saw := func(what string, id uuid.UUID, version int64) {
		k := what + " " + id.String()
		if version < seen[k] {
			t.Errorf("%s went back from version %d to %d", k, seen[k], version)
		}
		seen[k] = max(seen[k], version)
	}
	for ctx.Err() == nil {
		for _, id := range orders {
			if o, err := v.Order(ctx, id); err == nil {
				saw("order", id, o.Version)
			}
		}
		for _, id := range customers {
			if c, err := v.Customer(ctx, id); err == nil {
				saw("customer", id, c.Version)
			}
			list, err := v.CustomerOrders(ctx, id, uuid.Nil, 100)
			if err != nil {
				continue
			}
			for _, s := range list {
				saw("listed order", s.ID, s.Version)
			}
		}
	}
}
