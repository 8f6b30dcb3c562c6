package cqltest

import (
	"strings"
	"testing"
)

// TestAddr checks where the tests look for the CQL node: ORDERD_TEST_CQL
// wins, else the port scripts/cassandra.sh was given (CASSANDRA_PORT), else
// 9042.
func TestAddr(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "127.0.0.1:9042"},
		{map[string]string{"CASSANDRA_PORT": "19142"}, "127.0.0.1:19142"},
		{map[string]string{"ORDERD_TEST_CQL": "10.0.0.1:9042,10.0.0.2"}, "10.0.0.1:9042,10.0.0.2"},
		{map[string]string{"ORDERD_TEST_CQL": "127.0.0.1:9042", "CASSANDRA_PORT": "19142"}, "127.0.0.1:9042"},
	} {
		if got := addr(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("env %v: addr %q, want %q", c.env, got, c.want)
		}
	}
}

// TestClusterAddrs checks where the tests look for the three-node cluster:
// CASSANDRA_CLUSTER_HOSTS on CASSANDRA_CLUSTER_PORT, else loopback aliases
// on CASSANDRA_PORT+20000, as scripts/cassandra.sh cluster-start puts them.
func TestClusterAddrs(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "127.0.0.2:29042,127.0.0.3:29042,127.0.0.4:29042"},
		{map[string]string{"CASSANDRA_PORT": "19142"}, "127.0.0.2:39142,127.0.0.3:39142,127.0.0.4:39142"},
		{map[string]string{"CASSANDRA_CLUSTER_HOSTS": "10.0.0.2, 10.0.0.3", "CASSANDRA_CLUSTER_PORT": "9042"}, "10.0.0.2:9042,10.0.0.3:9042"},
	} {
		got, err := clusterAddrs(func(k string) string { return c.env[k] })
		if err != nil || strings.Join(got, ",") != c.want {
			t.Errorf("env %v: %q, %v; want %q", c.env, got, err, c.want)
		}
	}
}
