package kafkatest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

// Cluster returns the bootstrap addresses of the three-broker Kafka cluster
// that scripts/kafka.sh cluster-start runs, one per broker, once the
// cluster's metadata names every one of them. The brokers are
// KAFKA_CLUSTER_HOSTS (default 127.0.0.5,127.0.0.6,127.0.0.7) on
// KAFKA_CLUSTER_PORT (default KAFKA_PORT+30000), the script's variables;
// its topics default to replication factor 3 and min.insync.replicas 2.
// Without the cluster it skips t, or fails it under CI=true; under -short
// it skips at once.
func Cluster(t testing.TB) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs the Kafka cluster")
	}
	brokers, err := clusterAddrs(os.Getenv)
	if err == nil {
		err = probeCluster(brokers)
	}
	if err != nil {
		msg := fmt.Sprintf("no three-broker Kafka cluster at %s (KAFKA_CLUSTER_HOSTS, KAFKA_CLUSTER_PORT): %v; start it with scripts/kafka.sh cluster-start",
			strings.Join(brokers, ","), err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return brokers
}

// clusterAddrs returns the cluster's bootstrap addresses from the script's
// variables.
func clusterAddrs(getenv func(string) string) ([]string, error) {
	list := getenv("KAFKA_CLUSTER_HOSTS")
	if list == "" {
		list = "127.0.0.5,127.0.0.6,127.0.0.7"
	}
	p := getenv("KAFKA_CLUSTER_PORT")
	if p == "" {
		shared, err := strconv.Atoi(port(getenv))
		if err != nil {
			return nil, fmt.Errorf("KAFKA_PORT %q: %w", port(getenv), err)
		}
		p = strconv.Itoa(shared + 30000)
	}
	var brokers []string
	for h := range strings.SplitSeq(list, ",") {
		if h = strings.TrimSpace(h); h != "" {
			brokers = append(brokers, h+":"+p)
		}
	}
	return brokers, nil
}

// probeCluster asks for the cluster's metadata, which must name as many
// brokers as there are addresses.
func probeCluster(brokers []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	c, done := client(brokers, probeTimeout)
	defer done()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return err
	}
	if len(md.Brokers) != len(brokers) {
		return fmt.Errorf("the metadata names %d brokers, want %d", len(md.Brokers), len(brokers))
	}
	return nil
}
