package cqltest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/gocql/gocql"
)

// ClusterReplication is the replication of a keyspace on the three-node
// cluster: every node holds every row, so QUORUM (two of three) holds
// while any one node is down.
const ClusterReplication = "{'class': 'SimpleStrategy', 'replication_factor': 3}"

// Cluster returns the contact points of the three-node Cassandra cluster
// that scripts/cassandra.sh cluster-start runs, one host:port per node, once
// every node answers a query and knows the other two. The nodes are
// CASSANDRA_CLUSTER_HOSTS (default 127.0.0.2,127.0.0.3,127.0.0.4) on
// CASSANDRA_CLUSTER_PORT (default CASSANDRA_PORT+20000), the script's
// variables. Without the cluster it skips t, or fails it under CI=true;
// under -short it skips at once.
func Cluster(t testing.TB) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs the Cassandra cluster")
	}
	hosts, err := clusterAddrs(os.Getenv)
	if err == nil {
		err = probeCluster(hosts)
	}
	if err != nil {
		msg := fmt.Sprintf("no three-node Cassandra cluster at %s (CASSANDRA_CLUSTER_HOSTS, CASSANDRA_CLUSTER_PORT): %v; start it with scripts/cassandra.sh cluster-start",
			strings.Join(hosts, ","), err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return hosts
}

// clusterAddrs returns the cluster's host:port contact points from the
// script's variables.
func clusterAddrs(getenv func(string) string) ([]string, error) {
	list := getenv("CASSANDRA_CLUSTER_HOSTS")
	if list == "" {
		list = "127.0.0.2,127.0.0.3,127.0.0.4"
	}
	port := getenv("CASSANDRA_CLUSTER_PORT")
	if port == "" {
		shared := getenv("CASSANDRA_PORT")
		if shared == "" {
			shared = DefaultPort
		}
		p, err := strconv.Atoi(shared)
		if err != nil {
			return nil, fmt.Errorf("CASSANDRA_PORT %q: %w", shared, err)
		}
		port = strconv.Itoa(p + 20000)
	}
	var hosts []string
	for h := range strings.SplitSeq(list, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h+":"+port)
		}
	}
	return hosts, nil
}

// probeCluster asks each node alone for its peers: each must answer and
// name the other nodes.
func probeCluster(hosts []string) error {
	for _, h := range hosts {
		c := gocql.NewCluster(h)
		c.Timeout, c.ConnectTimeout = Timeout, Timeout
		c.Consistency = gocql.One
		c.DisableInitialHostLookup = true
		c.HostFilter = gocql.WhiteListHostFilter(h)
		c.Logger = quiet{}
		sess, err := c.CreateSession()
		if err != nil {
			return fmt.Errorf("%s: %w", h, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		iter := sess.Query(`SELECT peer FROM system.peers`).WithContext(ctx).Iter()
		n := iter.NumRows()
		err = iter.Close()
		cancel()
		sess.Close()
		switch {
		case err != nil:
			return fmt.Errorf("%s: query system.peers: %w", h, err)
		case n < len(hosts)-1:
			return fmt.Errorf("%s knows %d peers, want %d", h, n, len(hosts)-1)
		}
	}
	return nil
}
