package main

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderd/orderd/internal/api"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

// countedStore counts the events appended, for orderd_events_appended_total.
type countedStore struct {
	store.Store
	appended *prometheus.CounterVec
}

func countAppends(st store.Store, reg prometheus.Registerer) store.Store {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "orderd_events_appended_total", Help: "Events appended to the event store, by aggregate type.",
	}, []string{"aggregate_type"})
	reg.MustRegister(c)
	return countedStore{Store: st, appended: c}
}

func (s countedStore) Append(ctx context.Context, id uuid.UUID, expected int64, events []store.Event) error {
	err := s.Store.Append(ctx, id, expected, events)
	if err == nil && len(events) > 0 {
		s.appended.WithLabelValues(events[0].AggregateType).Add(float64(len(events)))
	}
	return err
}

// consumers names the feed's consumers and their positions.
func consumers(projector, relayWorker *watched) map[string]func() int64 {
	m := map[string]func() int64{"projector": projector.Position}
	if relayWorker != nil {
		m["relay"] = relayWorker.Position
	}
	return m
}

var (
	lagEventsDesc   = prometheus.NewDesc("orderd_feed_lag_events", "Committed events a feed consumer has not processed yet.", []string{"consumer"}, nil)
	lagSecondsDesc  = prometheus.NewDesc("orderd_feed_lag_seconds", "Age of the oldest committed event a feed consumer has not processed yet; 0 when caught up.", []string{"consumer"}, nil)
	deadLettersDesc = prometheus.NewDesc("orderd_dead_letters", "Events in the dead-letter ledger, by state.", []string{"state"}, nil)
)

// lagCollector measures, at each scrape, how far each consumer is behind
// the feed's head, in events and in seconds.
type lagCollector struct {
	feed      store.Feed
	consumers map[string]func() int64
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagEventsDesc
	ch <- lagSecondsDesc
}

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	head, err := c.feed.Head(ctx)
	if err != nil {
		return
	}
	for name, position := range c.consumers {
		events, seconds := lag(ctx, c.feed, head, position())
		ch <- prometheus.MustNewConstMetric(lagEventsDesc, prometheus.GaugeValue, float64(events), name)
		ch <- prometheus.MustNewConstMetric(lagSecondsDesc, prometheus.GaugeValue, seconds, name)
	}
}

// lag returns how many events after pos are committed, and the age of the
// first of them. The feed answers at once since those events exist.
func lag(ctx context.Context, feed store.Feed, head, pos int64) (int64, float64) {
	if pos >= head {
		return 0, 0
	}
	next, err := feed.ReadFeed(ctx, pos, 1)
	if err != nil || len(next) == 0 {
		return head - pos, 0
	}
	return head - pos, time.Since(next[0].Timestamp).Seconds()
}

// deadLetterCollector reports the dead-letter ledger's size by state.
type deadLetterCollector struct{ ledger relay.Ledger }

func (c *deadLetterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- deadLettersDesc }

func (c *deadLetterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	counts, err := c.ledger.Count(ctx)
	if err != nil {
		return
	}
	for _, state := range []string{relay.Failed, relay.Parked} {
		ch <- prometheus.MustNewConstMetric(deadLettersDesc, prometheus.GaugeValue, float64(counts[state]), state)
	}
}

// readiness reports each component for /readyz. The store, the projector and
// the relay worker are "down" when they fail; a Kafka outage (breaker open)
// and dead letters make the service "degraded", not unready: commands are
// still accepted and kept in the outbox, so the instance should keep
// serving.
func readiness(b *backend, relayWorker *watched, rl *relay.Relay, ledger relay.Ledger) api.Readiness {
	return func(ctx context.Context) map[string]api.Component {
		out := map[string]api.Component{}
		storeErr := b.ping(ctx)
		if storeErr != nil {
			out["store"] = api.Component{Status: "down", Detail: storeErr.Error()}
		} else {
			out["store"] = api.Component{Status: "up"}
		}
		// Lag in events exists only where the store has a feed of positions,
		// and without the head there is none to tell.
		var head int64
		var headErr error = store.ErrNoFeed
		if b.hasFeed() {
			head, headErr = b.events.Head(ctx)
		}
		lag := func(pos int64) *int64 {
			if headErr != nil {
				return nil
			}
			l := head - pos
			return &l
		}
		if b.projector == nil {
			out["projector"] = api.Component{Status: "down", Detail: b.cdcOff}
		} else {
			out["projector"] = b.projector.component(lag(b.projector.Position()))
		}
		switch {
		case relayWorker == nil && b.cdcOff != "" && rl.On():
			out["relay"] = api.Component{Status: "down", Detail: b.cdcOff}
		case relayWorker == nil:
			out["relay"] = api.Component{Status: "off", Detail: "no Kafka brokers configured; events are kept in the outbox"}
		default:
			// The relay failing (Kafka unreachable at start, say) degrades
			// the service; it does not make it unready.
			c := relayWorker.component(lag(relayWorker.Position()))
			breaker := "kafka circuit breaker " + rl.Breaker()
			if c.Status == "down" {
				c.Status, c.Detail = "degraded", breaker+"; "+c.Detail
			} else if c.Detail = breaker; rl.Breaker() != "closed" {
				c.Status = "degraded"
			}
			out["relay"] = c
		}
		if counts, err := ledger.Count(ctx); err != nil {
			out["dead_letters"] = api.Component{Status: "down", Detail: err.Error()}
		} else {
			n := int64(counts[relay.Failed] + counts[relay.Parked])
			c := api.Component{Status: "up", Lag: &n}
			if n > 0 {
				c.Status = "degraded"
				c.Detail = fmt.Sprintf("%d failed, %d parked behind them", counts[relay.Failed], counts[relay.Parked])
			}
			out["dead_letters"] = c
		}
		return out
	}
}
