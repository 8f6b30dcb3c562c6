package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/store/cqltest"
)

// BenchmarkClusterOnCassandra is the CQL path as users would deploy it:
// three orderd processes on one Apache Cassandra keyspace with the relay
// on, 12 clients sending CreateOrder round-robin to the three. For each
// command it measures, from the moment the client sent it, the answer
// (cmd), a GET with min_version on another node returning it (read), and
// its record reaching a Kafka consumer (kafka: the consumer's fetch wait,
// at most 10 ms, included). On Cassandra the projector and the relay
// follow hints (every 100 ms) and the reconciliation pass; on ScyllaDB the
// CDC log takes the hints' place.
func BenchmarkClusterOnCassandra(b *testing.B) {
	brokers := kafkatest.Brokers(b)
	hosts := cqltest.Hosts(b)
	orders := kafkatest.Topic(b, brokers, 3)
	customers := kafkatest.Topic(b, brokers, 1)
	c := &cluster{t: b, env: kafkaEnv(b, brokers,
		"ORDERD_STORE", "scylla",
		"ORDERD_SCYLLA_HOSTS", strings.Join(hosts, ","),
		"ORDERD_SCYLLA_KEYSPACE", cqltest.Keyspace(b, hosts),
		"ORDERD_KAFKA_TOPICS", "Order="+orders+",Customer="+customers,
		"ORDERD_LOG_LEVEL", "warn",
	)}
	nodes := startCluster(b, c, 3)
	cust := nodes[0].svc.registerCustomer(b, "bench@example.com").ID

	// The consumer notes when each order's creation arrives.
	var (
		mu      sync.Mutex
		sent    = map[string]time.Time{}
		arrived = map[string]time.Time{}
	)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	for p := range 3 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: orders, Partition: p, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 10 * time.Millisecond})
		defer r.Close()
		go func() {
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				if kafkaHeader(m.Headers, "ce_sequence") != "1" {
					continue
				}
				mu.Lock()
				if _, dup := arrived[string(m.Key)]; !dup {
					arrived[string(m.Key)] = time.Now()
				}
				mu.Unlock()
			}
		}()
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	var cmd, read []time.Duration
	var next sync.Mutex
	i := 0
	b.SetParallelism(6) // 12 clients on 2 cores
	b.ResetTimer()
	began := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var myCmd, myRead []time.Duration
		for pb.Next() {
			next.Lock()
			n, m := nodes[i%3], nodes[(i+1)%3]
			i++
			next.Unlock()
			body := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":2}]}`, cust, uuid.NewString())
			t0 := time.Now()
			id, err := post(client, n.svc.base+"/v1/orders", body)
			if err != nil {
				b.Error(err)
				return
			}
			myCmd = append(myCmd, time.Since(t0))
			mu.Lock()
			sent[id] = t0
			mu.Unlock()
			if err := get(client, m.svc.base+"/v1/orders/"+id+"?min_version=1"); err != nil {
				b.Error(err)
				return
			}
			myRead = append(myRead, time.Since(t0))
		}
		mu.Lock()
		cmd, read = append(cmd, myCmd...), append(read, myRead...)
		mu.Unlock()
	})
	elapsed := time.Since(began)
	b.StopTimer()

	deadline := time.Now().Add(60 * time.Second)
	var toKafka []time.Duration
	for {
		mu.Lock()
		toKafka = toKafka[:0]
		for id, t0 := range sent {
			if at, ok := arrived[id]; ok {
				toKafka = append(toKafka, at.Sub(t0))
			}
		}
		done := len(toKafka) == len(sent)
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d orders reached Kafka within 60s", len(toKafka), len(sent))
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.ReportMetric(float64(len(cmd))/elapsed.Seconds(), "cmds/s")
	reportPercentiles(b, "cmd-", cmd)
	reportPercentiles(b, "read-", read)
	reportPercentiles(b, "kafka-", toKafka)
}

// startCluster starts n nodes of c and waits until each worker has one
// active instance.
func startCluster(tb testing.TB, c *cluster, n int) []*node {
	tb.Helper()
	var nodes []*node
	for k := range n {
		nodes = append(nodes, c.start(fmt.Sprintf("node-%c", 'a'+k)))
	}
	c.active("relay", 30*time.Second)
	c.active("projector", 30*time.Second)
	return nodes
}
