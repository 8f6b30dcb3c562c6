package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// MaxReplication is the highest replication factor a topic can have: the
// protocol carries it in 16 bits.
const MaxReplication = 32767

// DefaultReplication returns the replication factor and min.insync.replicas
// of the topics EnsureTopics creates on a cluster of brokers brokers when
// the config leaves them open: every broker up to 3 replicas, and writes
// acknowledged by all but one of them, at least 1. Three replicas with two
// in sync is the usual choice: an acknowledged event survives the loss of
// any one broker, and writes go on while one is down. (1 and 2 brokers
// tolerate no loss with writes going on; 2 keeps a second copy.)
func DefaultReplication(brokers int) (replication, minInsync int) {
	replication = max(1, min(brokers, 3))
	return replication, max(1, replication-1)
}

// durability returns the replication factor and min.insync.replicas of new
// topics on a cluster of brokers brokers, or an error naming the setting
// at fault when the cluster cannot hold them.
func (c KafkaConfig) durability(brokers int) (replication, minInsync int, err error) {
	replication, minInsync = DefaultReplication(brokers)
	if c.ReplicationFactor > 0 {
		replication, minInsync = c.ReplicationFactor, max(1, c.ReplicationFactor-1)
	}
	if c.MinInsyncReplicas > 0 {
		minInsync = c.MinInsyncReplicas
	}
	switch {
	case replication > brokers:
		return 0, 0, fmt.Errorf("kafka: replication factor %d is more than the cluster's %d brokers: %w",
			replication, brokers, kafka.InvalidReplicationFactor)
	case minInsync > replication:
		return 0, 0, fmt.Errorf("kafka: min.insync.replicas %d is more than the replication factor %d: "+
			"no write with acks=all could succeed", minInsync, replication)
	}
	return replication, minInsync, nil
}

// EnsureTopics creates those of topics that do not exist, with
// cfg.Partitions, and the replication factor and min.insync.replicas of
// cfg or else DefaultReplication's for the cluster's broker count at this
// moment, through the cluster's controller. Existing topics are left as
// they are, so it is idempotent; one with fewer replicas or a lower
// min.insync.replicas than new topics would get is logged as a warning. It
// returns once the new topics accept writes, or with the first error: a
// replication the cluster cannot hold (wrapping InvalidReplicationFactor
// when it exceeds the broker count), the broker's, or ctx's. Without a
// deadline in ctx it gives up after 30 s.
func (k *Kafka) EnsureTopics(ctx context.Context, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	c, done := k.freshClient()
	defer done()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("kafka: metadata of %v: %w", topics, err)
	}
	replication, minInsync, err := k.cfg.durability(len(md.Brokers))
	if err != nil {
		return err
	}
	var missing []string
	for _, t := range topics {
		i := slices.IndexFunc(md.Topics, func(mt kafka.Topic) bool { return mt.Name == t })
		if i < 0 || errors.Is(md.Topics[i].Error, kafka.UnknownTopicOrPartition) {
			missing = append(missing, t)
		} else if len(md.Topics[i].Partitions) > 0 {
			if n := len(md.Topics[i].Partitions[0].Replicas); n < replication {
				k.log.Warn("kafka topic has fewer replicas than orderd would give it; it is left as it is",
					zap.String("topic", t), zap.Int("replication_factor", n), zap.Int("configured", replication))
			}
		}
	}
	k.checkMinInsync(ctx, c, topics, missing, minInsync)
	if len(missing) == 0 {
		return nil
	}
	req := &kafka.CreateTopicsRequest{Topics: make([]kafka.TopicConfig, len(missing))}
	for i, t := range missing {
		req.Topics[i] = kafka.TopicConfig{Topic: t, NumPartitions: k.cfg.Partitions, ReplicationFactor: replication,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(minInsync)}}}
	}
	// kafka-go routes CreateTopics to the controller and, for the topics it
	// created, waits until they appear in the transport's metadata: the
	// writer's transport, so that its cache knows them at once.
	res, err := k.admin.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("kafka: create topics %v: %w", missing, err)
	}
	var created []string
	var errs []error
	for _, t := range missing {
		switch err := res.Errors[t]; {
		case err == nil:
			created = append(created, t)
			k.log.Info("created kafka topic", zap.String("topic", t), zap.Int("partitions", k.cfg.Partitions),
				zap.Int("replication_factor", replication), zap.Int("min_insync_replicas", minInsync))
		case errors.Is(err, kafka.TopicAlreadyExists): // another instance was first
		default:
			errs = append(errs, fmt.Errorf("kafka: create topic %s: %w", t, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return k.awaitLeaders(ctx, created)
}

// checkMinInsync warns about each existing topic (of topics, not in
// missing) whose min.insync.replicas is below minInsync. It is advice: a
// failure to read the configs is logged at debug level only.
func (k *Kafka) checkMinInsync(ctx context.Context, c *kafka.Client, topics, missing []string, minInsync int) {
	req := &kafka.DescribeConfigsRequest{}
	for _, t := range topics {
		if !slices.Contains(missing, t) {
			req.Resources = append(req.Resources, kafka.DescribeConfigRequestResource{
				ResourceType: kafka.ResourceTypeTopic, ResourceName: t, ConfigNames: []string{"min.insync.replicas"}})
		}
	}
	if len(req.Resources) == 0 {
		return
	}
	res, err := c.DescribeConfigs(ctx, req)
	if err != nil {
		k.log.Debug("kafka: cannot read the topics' min.insync.replicas", zap.Error(err))
		return
	}
	for _, r := range res.Resources {
		for _, e := range r.ConfigEntries {
			if n, err := strconv.Atoi(e.ConfigValue); err == nil && e.ConfigName == "min.insync.replicas" && n < minInsync {
				k.log.Warn("kafka topic has a lower min.insync.replicas than orderd would give it; it is left as it is",
					zap.String("topic", r.ResourceName), zap.Int("min_insync_replicas", n), zap.Int("configured", minInsync))
			}
		}
	}
}

// freshClient returns an admin client on a transport of its own, whose
// metadata is read from the cluster now rather than from the writer's
// cache (up to 6 s old), and a function closing its connections.
func (k *Kafka) freshClient() (*kafka.Client, func()) {
	tr := &kafka.Transport{ClientID: k.cfg.ClientID, DialTimeout: k.transport.DialTimeout}
	return &kafka.Client{Addr: k.admin.Addr, Transport: tr, Timeout: k.cfg.WriteTimeout}, tr.CloseIdleConnections
}

// awaitLeaders returns once every partition of topics answers as a leader.
// Metadata names a new partition's leader a moment before that broker acts
// as one, and a publish in between fails with NotLeaderForPartition.
func (k *Kafka) awaitLeaders(ctx context.Context, topics []string) error {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, t := range topics {
		for p := range k.cfg.Partitions {
			req.Topics[t] = append(req.Topics[t], kafka.LastOffsetOf(p))
		}
	}
	for delay := 10 * time.Millisecond; len(req.Topics) > 0; delay = min(2*delay, time.Second) {
		res, err := k.admin.ListOffsets(ctx, req)
		if err == nil {
			for t, offsets := range res.Topics {
				if !slices.ContainsFunc(offsets, func(o kafka.PartitionOffsets) bool { return o.Error != nil }) {
					delete(req.Topics, t)
				}
			}
		}
		if len(req.Topics) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: topics %v created, but their partitions have no leader yet: %w", topics, ctx.Err())
		case <-time.After(delay):
		}
	}
	return nil
}
