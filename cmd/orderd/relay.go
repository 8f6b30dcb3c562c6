package main

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store/scylla/cdc"
)

// newRelay builds the relay. With no brokers configured it still returns a
// relay, so that operators can list dead letters, but no worker: the outbox
// keeps every event, and a later start with brokers publishes from the
// first. close releases the Kafka client.
func newRelay(cfg config, b *backend, ledger relay.Ledger, reg prometheus.Registerer, log *zap.Logger) (*relay.Relay, *watched, func(), error) {
	events := b.events
	topics, _ := cfg.topicMap() // checked by parseConfig
	rcfg := relay.Config{
		Topics:           relay.Topics{Prefix: cfg.topicPrefix, ByType: topics},
		BatchSize:        cfg.relayBatch,
		RetryInitial:     cfg.retryInitial,
		RetryMax:         cfg.retryMax,
		BreakerFailures:  uint32(cfg.breakerFailures),
		BreakerOpen:      cfg.breakerOpen,
		BreakerSuccesses: uint32(cfg.breakerSuccesses),
	}
	metrics := relay.NewMetrics(reg)
	brokers := cfg.brokers()
	if len(brokers) == 0 {
		log.Warn("relay off: no Kafka brokers configured (ORDERD_KAFKA_BROKERS); events are kept in the outbox and published from the first once a broker is configured")
		return relay.New(events, events, nil, ledger, rcfg, log, metrics), nil, func() {}, nil
	}
	k, err := relay.NewKafka(relay.KafkaConfig{
		Brokers:           brokers,
		ClientID:          "orderd",
		Partitions:        cfg.partitions,
		ReplicationFactor: cfg.replication,
	}, log)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kafka: %w", err)
	}
	rl := relay.New(events, events, k, ledger, rcfg, log, metrics)
	log.Info("relay on", zap.Strings("brokers", brokers),
		zap.Strings("topics", rcfg.Topics.All(aggregate.OrderType, aggregate.CustomerType)))
	if b.cdcOff != "" {
		return rl, nil, func() { _ = k.Close() }, nil
	}
	svc := relayService{relay: rl, kafka: k, topics: rcfg.Topics.All(aggregate.OrderType, aggregate.CustomerType)}
	if !b.hasFeed() {
		svc.cdc = b.cdcReader("relay", rl.Deliver)
	}
	return rl, &watched{Service: svc}, func() { _ = k.Close() }, nil
}

// relayService makes sure the topics exist, then relays. It fails, and is
// restarted by the supervisor, while Kafka cannot be reached at start; the
// commands meanwhile are accepted and kept in the outbox.
type relayService struct {
	relay  *relay.Relay
	kafka  *relay.Kafka
	topics []string
	cdc    *cdc.Reader // ScyllaDB: the CDC log pushes events; nil: the relay reads the store's feed
}

func (s relayService) Serve(ctx context.Context) error {
	if err := s.kafka.EnsureTopics(ctx, s.topics); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("relay: create topics: %w", err)
	}
	if s.cdc == nil {
		return s.relay.Serve(ctx)
	}
	if err := s.relay.Resume(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return s.cdc.Serve(ctx)
}

func (s relayService) Position() int64 { return s.relay.Position() }
