// Package kafkatest gives tests a real Kafka broker: its address, fresh
// topics and a way to read back what was published.
//
// The broker comes from scripts/kafka.sh: ORDERD_TEST_KAFKA names it
// (comma-separated host:port bootstrap addresses); without it, the broker
// the script starts, 127.0.0.1 on KAFKA_PORT (the script's variable,
// default 9092). Tests skip when it does not answer, except under CI=true,
// where a missing broker fails them: a test that silently skips in CI
// proves nothing. Under go test -short (make quick) they skip at once.
package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// probeTimeout bounds the check that the broker answers: a broker that
// takes longer than this to return metadata on loopback is not usable.
const probeTimeout = 3 * time.Second

// Brokers returns the test broker's bootstrap addresses once it answered a
// metadata request. Without an answering broker it skips the test, or fails
// it when CI=true. Under go test -short (make quick) it skips the test
// without looking: the quick run needs no server.
func Brokers(t testing.TB) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs a Kafka broker")
	}
	addr := Addr()
	brokers := strings.Split(addr, ",")
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	c, done := client(brokers, probeTimeout)
	defer done()
	if _, err := c.Metadata(ctx, &kafka.MetadataRequest{}); err != nil {
		msg := fmt.Sprintf("kafka at %s does not answer (%v); start it with scripts/kafka.sh start, or set KAFKA_PORT or ORDERD_TEST_KAFKA", addr, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return brokers
}

// DefaultPort is the client port of scripts/kafka.sh when KAFKA_PORT is
// unset.
const DefaultPort = "9092"

// Addr returns the test broker's bootstrap addresses, comma-separated:
// ORDERD_TEST_KAFKA if set, else 127.0.0.1 on KAFKA_PORT (default
// DefaultPort), where scripts/kafka.sh start puts the broker.
func Addr() string {
	return addr(os.Getenv)
}

func addr(getenv func(string) string) string {
	if a := getenv("ORDERD_TEST_KAFKA"); a != "" {
		return a
	}
	return "127.0.0.1:" + port(getenv)
}

func port(getenv func(string) string) string {
	if p := getenv("KAFKA_PORT"); p != "" {
		return p
	}
	return DefaultPort
}

// Port returns the client port scripts/kafka.sh starts its broker on:
// KAFKA_PORT, or DefaultPort. A test that starts a broker of its own picks
// its port from this one, so that it cannot take the shared broker's. It
// fails t when KAFKA_PORT is not a port number.
func Port(t testing.TB) int {
	t.Helper()
	p, err := strconv.Atoi(port(os.Getenv))
	if err != nil || p <= 0 || p > 65535 {
		t.Fatalf("KAFKA_PORT=%q is not a port number", os.Getenv("KAFKA_PORT"))
	}
	return p
}

// Name returns a fresh, legal topic name derived from the test's, and
// deletes the topic when the test ends if something created it.
func Name(t testing.TB, brokers []string) string {
	t.Helper()
	name := topicName(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, done := client(brokers, 10*time.Second)
		defer done()
		res, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{name}})
		if err == nil {
			err = res.Errors[name]
		}
		if err != nil && !errors.Is(err, kafka.UnknownTopicOrPartition) {
			t.Logf("kafkatest: delete topic %s: %v", name, err)
		}
	})
	return name
}

// Topic creates a topic with a fresh name, the given partitions and topic
// configs (e.g. max.message.bytes), waits until every partition has a
// leader, and deletes it when the test ends.
func Topic(t testing.TB, brokers []string, partitions int, configs ...kafka.ConfigEntry) string {
	t.Helper()
	name := Name(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, done := client(brokers, 10*time.Second)
	defer done()
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic:             name,
		NumPartitions:     partitions,
		ReplicationFactor: 1,
		ConfigEntries:     configs,
	}}})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		t.Fatalf("kafkatest: create topic %s: %v", name, err)
	}
	if got := Partitions(t, brokers, name); len(got) != partitions {
		t.Fatalf("kafkatest: topic %s has %d partitions, want %d", name, len(got), partitions)
	}
	return name
}

// Partitions returns the topic's partition ids in order, waiting up to 10 s
// for the topic to exist and every partition's leader to answer: creation
// is asynchronous, and a write or fetch before that fails.
func Partitions(t testing.TB, brokers []string, topic string) []int {
	t.Helper()
	ends := EndOffsets(t, brokers, topic)
	ids := make([]int, 0, len(ends))
	for id := range ends {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// AddPartitions grows topic to n partitions and waits until the brokers'
// metadata shows all n: CreatePartitions answers once the controller has
// taken the change, and the metadata follows a moment later.
func AddPartitions(t testing.TB, brokers []string, topic string, n int) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := c.CreatePartitions(context.Background(), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: int32(n)}}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		t.Fatalf("kafkatest: add partitions to %s: %v", topic, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := Partitions(t, brokers, topic)
		if len(got) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kafkatest: %s has %d partitions 30 s after adding, want %d", topic, len(got), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// EndOffsets returns each partition's end offset: on a fresh topic, the
// number of records written to it. Like Partitions, it waits up to 10 s for
// the topic to be ready.
func EndOffsets(t testing.TB, brokers []string, topic string) map[int]int64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ends, err := endOffsets(brokers, topic)
		if err == nil {
			return ends
		}
		if time.Now().After(deadline) {
			t.Fatalf("kafkatest: topic %s not ready: %v", topic, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// endOffsets asks the leader of each of the topic's partitions for its end
// offset, which also shows that the leader is ready: metadata names a new
// partition's leader a moment before that broker acts as one.
func endOffsets(brokers []string, topic string) (map[int]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	// A fresh transport each time: a cached layout would hide a new topic.
	c, done := client(brokers, probeTimeout)
	defer done()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(md.Topics, func(tp kafka.Topic) bool { return tp.Name == topic })
	switch {
	case i < 0:
		return nil, kafka.UnknownTopicOrPartition
	case md.Topics[i].Error != nil:
		return nil, md.Topics[i].Error
	case len(md.Topics[i].Partitions) == 0:
		return nil, errors.New("no partitions yet")
	}
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[i].Partitions {
		if p.Error != nil || p.Leader.Host == "" {
			return nil, fmt.Errorf("partition %d has no leader (%v)", p.ID, p.Error)
		}
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	ends := make(map[int]int64, len(reqs))
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("partition %d: %w", po.Partition, po.Error)
		}
		ends[po.Partition] = po.LastOffset
	}
	if len(ends) != len(reqs) {
		return nil, fmt.Errorf("offsets of %d of %d partitions", len(ends), len(reqs))
	}
	return ends, nil
}

// Consume waits until the fresh topic holds at least n messages, then
// returns all it holds, so a test also sees duplicates and strays beyond n.
// It fails the test if that takes longer than timeout. The messages come
// sorted by partition, then offset, so a test can check each key's order.
func Consume(t testing.TB, brokers []string, topic string, n int, timeout time.Duration) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var ends map[int]int64
	for {
		ends = EndOffsets(t, brokers, topic)
		total := int64(0)
		for _, end := range ends {
			total += end
		}
		if total >= int64(n) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: %s holds %d of %d messages after %s", topic, total, n, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}

	var (
		mu   sync.Mutex
		got  []kafka.Message
		errs []error
		wg   sync.WaitGroup
	)
	for p, end := range ends {
		if end == 0 {
			continue
		}
		// One partition-bound reader each, no consumer group: nothing to
		// join or commit, and each starts at the partition's first offset.
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers:   brokers,
			Topic:     topic,
			Partition: p,
			MaxWait:   100 * time.Millisecond, // return fetches promptly
		})
		wg.Go(func() {
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("partition %d: %w", p, err))
				} else {
					got = append(got, m)
				}
				mu.Unlock()
				if err != nil || m.Offset >= end-1 {
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("kafkatest: consume %s: %v", topic, err)
	}
	slices.SortFunc(got, func(a, b kafka.Message) int {
		if a.Partition != b.Partition {
			return a.Partition - b.Partition
		}
		return int(a.Offset - b.Offset)
	})
	return got
}

// client returns a kafka-go client on its own transport, and a function
// closing the transport's connections.
func client(brokers []string, timeout time.Duration) (*kafka.Client, func()) {
	tr := &kafka.Transport{DialTimeout: timeout, ClientID: "orderd-kafkatest"}
	return &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: timeout, Transport: tr}, tr.CloseIdleConnections
}

// topicName derives a legal, unique topic name from the test name.
func topicName(t testing.TB) string {
	var b strings.Builder
	for _, r := range t.Name() {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	name := b.String()
	if len(name) > 180 {
		name = name[:180]
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	return "orderd-test-" + name + "-" + hex.EncodeToString(suffix)
}

// AlterTopic sets one config of topic, for example raising its
// max.message.bytes.
func AlterTopic(t testing.TB, brokers []string, topic, key, value string) {
	t.Helper()
	c, done := client(brokers, 10*time.Second)
	defer done()
	res, err := c.AlterConfigs(context.Background(), &kafka.AlterConfigsRequest{Resources: []kafka.AlterConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
		Configs: []kafka.AlterConfigRequestConfig{{Name: key, Value: value}},
	}}})
	if err != nil {
		t.Fatalf("kafkatest: alter %s: %v", topic, err)
	}
	for _, e := range res.Errors {
		if e != nil {
			t.Fatalf("kafkatest: alter %s: %v", topic, e)
		}
	}
}
