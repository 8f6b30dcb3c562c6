package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/worker"
)

// relayParts are the relay and, with brokers configured, its Kafka client
// and the work its elected instance does.
type relayParts struct {
	relay *relay.Relay
	kafka *relay.Kafka // nil: the relay is off
	work  func(ctx context.Context) error
	// shards are the relays of the shards this process served, one each
	// (see newRelay); empty while the relay runs whole.
	shards *shardRelays
	// reach checks that Kafka answers (its topics' metadata): an instance
	// whose relay stepped down rejoins the relay's shards only then.
	reach func(ctx context.Context) error
}

// Breaker returns the worst circuit breaker state among the relays of
// this process: open, then half-open, then closed.
func (p relayParts) Breaker() string {
	worst := p.relay.Breaker()
	for _, r := range p.shards.all() {
		if st := r.Breaker(); rank(st) > rank(worst) {
			worst = st
		}
	}
	return worst
}

func rank(breaker string) int {
	switch breaker {
	case "open":
		return 2
	case "half-open":
		return 1
	}
	return 0
}

// shardRelays are the relays of the shards, made on a shard's first take
// here and kept (with their breakers) while the process lives.
type shardRelays struct {
	mu   sync.Mutex
	make func(shard store.Shard) *relay.Relay
	by   map[int]*relay.Relay
}

// of returns the relay of the shard ctx's fence names: whole the one
// relay, else the shard's own, since a Relay's state (its blocked set,
// read under the fence) is one shard's.
func (s *shardRelays) of(ctx context.Context, whole *relay.Relay) *relay.Relay {
	f, ok := store.FenceOf(ctx)
	if !ok || f.Shard.Count <= 1 {
		return whole
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.by[f.Shard.Index]
	if !ok {
		r = s.make(f.Shard)
		s.by[f.Shard.Index] = r
	}
	return r
}

func (s *shardRelays) all() []*relay.Relay {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*relay.Relay, 0, len(s.by))
	for _, r := range s.by {
		out = append(out, r)
	}
	return out
}

// newRelay builds the relay. With no brokers configured it still returns a
// relay, so that operators can list dead letters, but no work: the outbox
// keeps every event, and a later start with brokers publishes from the
// first. The caller closes the Kafka client.
func newRelay(cfg config, b *backend, reg prometheus.Registerer, log *zap.Logger) (relayParts, error) {
	cfg.relay.Types = aggregate.PublishedTypes()
	if !b.SharedLeases() {
		// One instance (SQLite): no other could take over, so stepping
		// down would only delay publishing once Kafka is back.
		cfg.relay.StepDown = 0
	}
	metrics := relay.NewMetrics(reg)
	if len(cfg.brokers) == 0 {
		log.Warn("relay off: no Kafka brokers configured (ORDERD_KAFKA_BROKERS); events are kept in the outbox and published from the first once a broker is configured")
		return relayParts{relay: relay.New(b.events, nil, b.ledger, cfg.relay, log, metrics)}, nil
	}
	k, err := relay.NewKafka(cfg.kafka, log)
	if err != nil {
		return relayParts{}, fmt.Errorf("kafka: %w", err)
	}
	rl := relay.New(b.events, k, b.ledger, cfg.relay, log, metrics)
	shards := &shardRelays{by: map[int]*relay.Relay{}, make: func(s store.Shard) *relay.Relay {
		return relay.New(b.events, k, b.ledger, cfg.relay, log.With(zap.Int("shard", s.Index)), metrics)
	}}
	// The admin API queues requests through rl; the relays of the shards
	// served here carry them out, so they are the ones to wake.
	rl.OnRequest(func() {
		for _, r := range shards.all() {
			r.Wake()
		}
	})
	topics := cfg.relay.Topics.All(cfg.relay.Types...)
	reg.MustRegister(partitionsCollector{k})
	log.Info("relay on", zap.Strings("brokers", cfg.brokers), zap.Strings("topics", topics))
	// The topics are made sure of first: the relay fails, and is restarted
	// by its supervisor, while Kafka cannot be reached at start; commands
	// meanwhile are accepted and kept in the outbox. So it does while a
	// topic's partition count differs from the recorded one.
	work := func(ctx context.Context) error {
		if err := k.EnsureTopics(ctx, topics); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("relay: create topics: %w", err)
		}
		if err := k.GuardPartitions(ctx, b.ledger, topics, cfg.acceptPartitions); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		err := shards.of(ctx, rl).Serve(ctx, b.feed)
		if errors.Is(err, relay.ErrCannotPublish) {
			// Hand the lease to an instance that may reach Kafka, and stand
			// aside as long as Kafka was given here.
			return worker.StepDown(cfg.relay.StepDown, err)
		}
		return err
	}
	reach := func(ctx context.Context) error { return k.EnsureTopics(ctx, topics) }
	return relayParts{relay: rl, kafka: k, work: work, shards: shards, reach: reach}, nil
}

var partitionsChangedDesc = prometheus.NewDesc("orderd_relay_topic_partitions_changed",
	"1 while a topic's partition count differs from the one the relay recorded, which makes it refuse to publish (see ORDERD_KAFKA_ACCEPT_PARTITIONS); 0 when they agree.",
	[]string{"topic"}, nil)

// partitionsCollector reports, for each topic the relay guards, whether its
// partition count changed (see relay.Kafka.GuardPartitions).
type partitionsCollector struct{ k *relay.Kafka }

func (c partitionsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- partitionsChangedDesc }

func (c partitionsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.k.Partitions() {
		v := 0.0
		if p.Live != p.Recorded {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(partitionsChangedDesc, prometheus.GaugeValue, v, p.Topic)
	}
}
