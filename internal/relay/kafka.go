package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// KafkaConfig configures Kafka. Zero fields take the defaults in brackets.
type KafkaConfig struct {
	Brokers  []string // bootstrap addresses, host:port; required
	ClientID string   // shown in the brokers' logs and quotas ["orderd"]

	// WriteTimeout bounds one produce request, and each metadata or admin
	// request [10s].
	WriteTimeout time.Duration

	// BatchTimeout is how long a partition's batch waits for more messages
	// before it is sent [100µs]. Waiting only merges concurrent Publish
	// calls: one call's messages for a partition share a batch anyway (up
	// to BatchBytes), and the relay publishes one batch at a time, so the
	// wait is pure latency. kafka-go's default of 1 s adds a second to
	// every Publish, and even 2 ms halves the relay's throughput (see
	// BenchmarkKafkaPublish). Zero means the default, not no wait: kafka-go
	// reads zero as 1 s.
	BatchTimeout time.Duration

	// BatchBytes caps one partition's produce request [1,000,000]. It must
	// stay a little under the topics' max.message.bytes (1,048,588 by
	// default), because the broker checks the whole record batch, and
	// kafka-go's size estimate does not count the batch's 61-byte header: a
	// batch right at the cap could be refused as too large, a permanent
	// error for messages that are each fine. A single message bigger than
	// BatchBytes is refused before anything is sent, as a permanent error.
	BatchBytes int64

	Partitions int // of the topics EnsureTopics creates [3]

	// ReplicationFactor and MinInsyncReplicas are those of the topics
	// EnsureTopics creates [the cluster's broker count up to 3, and one
	// less than the replication factor, at least 1: see
	// DefaultReplication]. With acks=all, which the relay always asks
	// for, an acknowledged event is on MinInsyncReplicas brokers at least,
	// and a partition takes writes while that many of its replicas are in
	// sync.
	ReplicationFactor int
	MinInsyncReplicas int
}

func (c *KafkaConfig) defaults() {
	if c.ClientID == "" {
		c.ClientID = "orderd"
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.BatchTimeout <= 0 {
		c.BatchTimeout = 100 * time.Microsecond
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = 1_000_000
	}
	if c.Partitions <= 0 {
		c.Partitions = 3
	}
}

// kafkaBatchSize is the most messages kafka-go puts in one partition's
// produce request. It exceeds the relay's batches (500) so that a Publish
// normally sends one request per partition; more would only make kafka-go
// preallocate bigger buffers.
const kafkaBatchSize = 1000

// Kafka publishes messages to Kafka with segmentio/kafka-go. It is the
// relay's Publisher. Its methods are safe for concurrent use.
type Kafka struct {
	cfg       KafkaConfig
	log       *zap.Logger
	transport *kafka.Transport
	writer    *kafka.Writer
	admin     *kafka.Client
	guard     *partitionGuard
}

// NewKafka returns a Kafka publishing to cfg.Brokers. It does not connect:
// the first Publish or EnsureTopics does. It fails only on a config without
// brokers.
func NewKafka(cfg KafkaConfig, log *zap.Logger) (*Kafka, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafka: no brokers configured")
	}
	cfg.defaults()
	addr := kafka.TCP(cfg.Brokers...)
	guard := &partitionGuard{}
	// One transport for the writer and the admin client, so that topics
	// EnsureTopics creates enter the writer's metadata cache at once
	// (kafka-go refreshes it after a CreateTopics) instead of failing
	// publishes with UnknownTopicOrPartition until the next refresh.
	transport := &kafka.Transport{
		ClientID:    cfg.ClientID,
		DialTimeout: min(cfg.WriteTimeout, 5*time.Second),
		// MetadataTTL stays at kafka-go's 6 s. It is the only refresh: a
		// NotLeaderForPartition does not invalidate the cache, and a failed
		// fetch stays cached. So publishes keep failing (transiently) for
		// up to 6 s after a leader change, or after the broker is back.
		// Shorter would mean more full-cluster metadata requests.
	}
	w := &kafka.Writer{
		Addr: addr,
		// No Topic: every message names its own.
		Transport: transport,
		// Java's default partitioner for keyed records, so that other
		// services' producers put an aggregate on the same partition
		// number (co-partitioning). kafka-go's default is round-robin,
		// which would scatter an aggregate's events and break its order.
		// The guard refuses a topic whose partition count changed, which
		// would move keys (see GuardPartitions).
		Balancer: guardBalancer{guard: guard, next: &kafka.Murmur2Balancer{}},
		// Wait for every in-sync replica: the zero value (RequireNone)
		// does not wait for any acknowledgement, and the relay would move
		// its checkpoint past events a broker never stored.
		RequiredAcks: kafka.RequireAll,
		// One attempt: the relay's loop owns retrying, with backoff and a
		// circuit breaker. kafka-go's own retries would hide failures from
		// the breaker, and retry against its stale metadata cache anyway.
		MaxAttempts:  1,
		BatchSize:    kafkaBatchSize,
		BatchBytes:   cfg.BatchBytes,
		BatchTimeout: cfg.BatchTimeout,
		ReadTimeout:  cfg.WriteTimeout,
		WriteTimeout: cfg.WriteTimeout,
		// Synchronous: Publish must return only once the brokers have
		// acknowledged, or with the error.
		Async: false,
		// Topics are created on purpose (EnsureTopics, with our partition
		// count), never by a first write with the broker's defaults.
		AllowAutoTopicCreation: false,
		// Every failure reaches the relay, which logs it; kafka-go's own
		// report of it is only for debugging.
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			log.Debug("kafka-go: " + fmt.Sprintf(msg, args...))
		}),
	}
	admin := &kafka.Client{Addr: addr, Transport: transport, Timeout: cfg.WriteTimeout}
	return &Kafka{cfg: cfg, log: log, transport: transport, writer: w, admin: admin, guard: guard}, nil
}

// Publish writes msgs and waits until all of them are acknowledged by every
// in-sync replica. A message without Time gets the current time.
//
// A partition's messages go in one request, in slice order, unless they
// exceed BatchBytes or 1000 messages; then they go in several, in turn, and a
// failed request does not stop the next: same-key order across requests
// holds only if nothing fails. (The relay never puts two events of one
// aggregate in one call.)
//
// A failure that retrying cannot fix returns a *PublishError wrapping
// ErrPermanent; any other error is transient. After an error, the messages
// of partitions whose request succeeded are written: see PublishError. If
// ctx ends first, Publish returns at once, and requests in flight may still
// land. Once a guarded topic's partition count changed (see
// GuardPartitions), Publish fails with ErrPartitionsChanged; the call that
// notices it may have written its messages, on the recorded partitions.
func (k *Kafka) Publish(ctx context.Context, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := k.guard.err(); err != nil {
		return err
	}
	now := time.Now()
	kms := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		km := kafka.Message{Topic: m.Topic, Key: m.Key, Value: m.Value, Time: m.Time}
		if km.Time.IsZero() {
			km.Time = now // kafka-go would send 0, the Unix epoch
		}
		if len(m.Headers) > 0 {
			km.Headers = make([]kafka.Header, len(m.Headers))
			for j, h := range m.Headers {
				km.Headers[j] = kafka.Header{Key: h.Key, Value: h.Value}
			}
		}
		kms[i] = km
	}
	err := k.writer.WriteMessages(ctx, kms...)
	if gerr := k.guard.err(); gerr != nil {
		return gerr
	}
	if err == nil {
		return nil
	}
	return classifyKafkaError(err, kms)
}

// Close waits for writes in flight and closes the connections. Publish
// fails after Close.
func (k *Kafka) Close() error {
	err := k.writer.Close()
	// The writer closes only transports it made itself.
	k.transport.CloseIdleConnections()
	return err
}

// PublishError is the error of a Publish that failed permanently. It wraps
// ErrPermanent and the first permanent kafka-go error, so errors.Is works
// with both (e.g. kafka.MessageSizeTooLarge).
//
// The index lists point into Publish's msgs. Every message not in Failed
// was acknowledged, so a caller that publishes only Failed again adds no
// duplicates. Permanent (a subset of Failed) is a hint, not a verdict: a
// broker accepts or refuses a partition's record batch as a whole, so it
// holds every message that shared the culprit's batch, innocent ones
// included; finding the culprit takes publishing the suspects again in
// smaller groups. When kafka-go refuses a message bigger than BatchBytes,
// it does so before sending anything: Permanent holds that message (the
// first such) and Failed all of msgs.
type PublishError struct {
	Failed    []int // not written: failed permanently or transiently
	Permanent []int // failed permanently, with the culprit's batch
	Err       error
}

func (e *PublishError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error, which wraps ErrPermanent.
func (e *PublishError) Unwrap() error { return e.Err }

// classifyKafkaError turns kafka-go's error for a WriteMessages of kms into
// Publish's: a *PublishError when any message failed permanently, else a
// transient error.
func classifyKafkaError(err error, kms []kafka.Message) error {
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		// The error carries the message, not its index, so find it by its
		// byte slices (kafka-go copies the struct, not the bytes).
		i := indexOfKafkaMessage(kms, tooLarge.Message)
		all := make([]int, len(kms))
		for j := range all {
			all[j] = j
		}
		return &PublishError{Failed: all, Permanent: []int{i}, Err: fmt.Errorf(
			"%w: kafka: message %d to %s is larger than BatchBytes, nothing sent: %w",
			ErrPermanent, i, tooLarge.Message.Topic, err)}
	}
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) {
		// One error for the whole call: metadata lookup, connection,
		// context. None of them is about the messages.
		return fmt.Errorf("kafka: publish %d messages: %w", len(kms), err)
	}
	var failed, permanent []int
	var first, firstPermanent error
	for i, e := range werrs {
		if e == nil {
			continue
		}
		failed = append(failed, i)
		if first == nil {
			first = e
		}
		if isPermanentKafkaError(e) {
			permanent = append(permanent, i)
			if firstPermanent == nil {
				firstPermanent = e
			}
		}
	}
	if firstPermanent != nil {
		return &PublishError{Failed: failed, Permanent: permanent, Err: fmt.Errorf(
			"%w: kafka: %d of %d messages refused: %w", ErrPermanent, len(permanent), len(kms), firstPermanent)}
	}
	// kafka-go's WriteErrors text lists every message's error; one is
	// enough to read, and the count says how many.
	return fmt.Errorf("kafka: publish: %d of %d messages failed: %w", len(failed), len(kms), first)
}

// isPermanentKafkaError reports whether err means the message itself can
// never be written: retrying the same bytes to the same topic fails again.
//
// Only faults of the record are permanent. Faults of the setup (topic
// missing, authorization, unsupported version, bad acks) are not, even
// though kafka.Error.Temporary is false for most of them: they would fail
// every message, and dead-lettering the whole stream is worse than the
// relay holding still, its breaker open, until an operator fixes them.
// Network and context errors are transient too. So is InvalidTimestamp: the
// record time is the event's, so a broker clock ahead of ours by more than
// message.timestamp.after.max.ms (1 h by default in Kafka 4), or a backlog
// older than message.timestamp.before.max.ms, would otherwise dead-letter
// everything; that is a setup fault to fix, not a bad event.
func isPermanentKafkaError(err error) bool {
	var code kafka.Error
	if !errors.As(err, &code) || code.Temporary() {
		return false // e.g. CorruptMessage is a CRC failure in transit
	}
	switch code {
	case kafka.MessageSizeTooLarge, // bigger than the topic's max.message.bytes
		kafka.RecordListTooLarge, // bigger than segment.bytes
		kafka.InvalidRecord,      // refused by broker-side validation (e.g. compacted topic without key)
		kafka.InvalidTopic:       // an illegal topic name, or an internal topic (orderd checks its names at start)
		return true
	}
	return false
}

// indexOfKafkaMessage returns the index in kms of m, a copy of one of them,
// or -1.
func indexOfKafkaMessage(kms []kafka.Message, m kafka.Message) int {
	same := func(a, b []byte) bool {
		return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
	}
	for i := range kms {
		if same(kms[i].Key, m.Key) && same(kms[i].Value, m.Value) && len(kms[i].Headers) == len(m.Headers) {
			return i
		}
	}
	return -1
}
