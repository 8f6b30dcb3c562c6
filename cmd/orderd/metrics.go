package main

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/worker"
)

// appendedCounter counts the events appended, by aggregate type, for
// aggregate.WithAppended.
func appendedCounter(reg prometheus.Registerer) func(aggregateType string, events int) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "orderd_events_appended_total", Help: "Events appended to the event store, by aggregate type.",
	}, []string{"aggregate_type"})
	reg.MustRegister(c)
	return func(aggregateType string, events int) { c.WithLabelValues(aggregateType).Add(float64(events)) }
}

var (
	lagEventsDesc   = prometheus.NewDesc("orderd_feed_lag_events", "Committed events a feed consumer has not processed yet, where known.", []string{"consumer"}, nil)
	lagSecondsDesc  = prometheus.NewDesc("orderd_feed_lag_seconds", "Age of the oldest committed event a feed consumer has not processed yet, where known; 0 when caught up.", []string{"consumer"}, nil)
	deadLettersDesc = prometheus.NewDesc("orderd_dead_letters", "Events in the dead-letter ledger, by state.", []string{"state"}, nil)
	epochDesc       = prometheus.NewDesc("orderd_worker_epoch", "The fencing epoch of this instance's last take of the worker's lease (0 before the first): while it is active, every write of the worker is conditional on it. Of a worker split into shards, the highest among its shards' leases.", []string{"worker"}, nil)
	shardsDesc      = prometheus.NewDesc("orderd_worker_shards", "The worker's shards this instance holds and runs now (a worker that is not split has one).", []string{"worker"}, nil)
	shardCountDesc  = prometheus.NewDesc("orderd_worker_shard_count", "How many shards the worker is split into (1 when it is not): the instances' orderd_worker_shards add up to it when every shard runs.", []string{"worker"}, nil)
	fencedDesc      = prometheus.NewDesc("orderd_worker_fenced_total", "The worker's runs on this instance that a write refused for a later epoch of its lease ended (another instance had taken it).", []string{"worker"}, nil)
)

// lagCollector reports, at each scrape, how far each consumer is behind the
// feed, in events and in seconds, where the backend knows it (see
// store.Lag).
type lagCollector struct {
	feed      store.Feed
	consumers []string
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagEventsDesc
	ch <- lagSecondsDesc
}

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, name := range c.consumers {
		lag, err := c.feed.Lag(ctx, name)
		if err != nil || !lag.Known {
			continue
		}
		ch <- prometheus.MustNewConstMetric(lagEventsDesc, prometheus.GaugeValue, float64(lag.Events), name)
		ch <- prometheus.MustNewConstMetric(lagSecondsDesc, prometheus.GaugeValue, lag.Age.Seconds(), name)
	}
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

var (
	workerUpDesc = prometheus.NewDesc("orderd_worker_up",
		"0 while a worker (projector, relay) has failed on this instance, until it runs again, or stepped down; 1 otherwise (active or standing by). A worker's failure never makes /readyz unready; this is where it shows.",
		[]string{"worker"}, nil)
	workerActiveDesc = prometheus.NewDesc("orderd_worker_active",
		"1 while this instance holds the worker's lease (of a worker split into shards: at least one shard's) and runs it, 0 while it stands by.",
		[]string{"worker"}, nil)
)

// workerCollector reports each worker's health and role on this
// instance, the shards it holds here, the fencing epoch of its last take
// of the lease, and how often its writes were fenced here.
type workerCollector []*worker.Balanced

func (c workerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- workerUpDesc
	ch <- workerActiveDesc
	ch <- epochDesc
	ch <- fencedDesc
	ch <- shardsDesc
	ch <- shardCountDesc
}

func (c workerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, w := range c {
		st := w.State()
		up, active := 1.0, 0.0
		if st.Err != nil || st.Aside != nil {
			up = 0
		}
		if st.Role == worker.RoleActive {
			active = 1
		}
		ch <- prometheus.MustNewConstMetric(workerUpDesc, prometheus.GaugeValue, up, w.Name())
		ch <- prometheus.MustNewConstMetric(workerActiveDesc, prometheus.GaugeValue, active, w.Name())
		ch <- prometheus.MustNewConstMetric(epochDesc, prometheus.GaugeValue, float64(st.Epoch), w.Name())
		ch <- prometheus.MustNewConstMetric(fencedDesc, prometheus.CounterValue, float64(st.Fenced), w.Name())
		ch <- prometheus.MustNewConstMetric(shardsDesc, prometheus.GaugeValue, float64(st.Held()), w.Name())
		ch <- prometheus.MustNewConstMetric(shardCountDesc, prometheus.GaugeValue, float64(w.Shards()), w.Name())
	}
}

var (
	shardLagEventsDesc  = prometheus.NewDesc("orderd_feed_shard_lag_events", "Committed events of one shard a feed consumer has not processed yet, for the shards this instance holds, where known.", []string{"consumer", "shard"}, nil)
	shardLagSecondsDesc = prometheus.NewDesc("orderd_feed_shard_lag_seconds", "Age of the oldest committed event of one shard a feed consumer has not processed yet, for the shards this instance holds, where known; 0 when caught up.", []string{"consumer", "shard"}, nil)
)

// shardLagger is the feed's lag of one shard (the CQL store's).
type shardLagger interface {
	ShardLag(ctx context.Context, consumer string, shard store.Shard) (store.Lag, error)
}

// shardLagCollector reports, at each scrape, the lag of each shard this
// instance holds, of each worker split into shards: the holder's view,
// so that the instances together report every shard once.
type shardLagCollector struct {
	lag     shardLagger
	workers []*worker.Balanced
}

func (c *shardLagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- shardLagEventsDesc
	ch <- shardLagSecondsDesc
}

func (c *shardLagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, w := range c.workers {
		for _, sh := range w.State().Shards {
			if !sh.Here {
				continue
			}
			lag, err := c.lag.ShardLag(ctx, w.Name(), store.Shard{Index: sh.Shard, Count: w.Shards()})
			if err != nil || !lag.Known {
				continue
			}
			shard := strconv.Itoa(sh.Shard)
			ch <- prometheus.MustNewConstMetric(shardLagEventsDesc, prometheus.GaugeValue, float64(lag.Events), w.Name(), shard)
			ch <- prometheus.MustNewConstMetric(shardLagSecondsDesc, prometheus.GaugeValue, lag.Age.Seconds(), w.Name(), shard)
		}
	}
}
