package kafkatest

import (
	"strings"
	"testing"
)

// TestAddr checks where the tests look for the broker: ORDERD_TEST_KAFKA
// wins, else the port scripts/kafka.sh was given (KAFKA_PORT), else 9092.
func TestAddr(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "127.0.0.1:9092"},
		{map[string]string{"KAFKA_PORT": "19192"}, "127.0.0.1:19192"},
		{map[string]string{"ORDERD_TEST_KAFKA": "10.0.0.1:9092,10.0.0.2:9092"}, "10.0.0.1:9092,10.0.0.2:9092"},
		{map[string]string{"ORDERD_TEST_KAFKA": "127.0.0.1:29092", "KAFKA_PORT": "19192"}, "127.0.0.1:29092"},
	} {
		if got := addr(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("env %v: addr %q, want %q", c.env, got, c.want)
		}
	}
}

// TestPort checks the port a test derives its own broker's from.
func TestPort(t *testing.T) {
	t.Setenv("KAFKA_PORT", "")
	if got := Port(t); got != 9092 {
		t.Errorf("KAFKA_PORT unset: Port %d, want 9092", got)
	}
	t.Setenv("KAFKA_PORT", "19192")
	if got := Port(t); got != 19192 {
		t.Errorf("KAFKA_PORT=19192: Port %d, want 19192", got)
	}
}

// TestClusterAddrs checks where the tests look for the three-broker
// cluster: KAFKA_CLUSTER_HOSTS on KAFKA_CLUSTER_PORT, else loopback aliases
// on KAFKA_PORT+30000, as scripts/kafka.sh cluster-start puts them.
func TestClusterAddrs(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "127.0.0.5:39092,127.0.0.6:39092,127.0.0.7:39092"},
		{map[string]string{"KAFKA_PORT": "19192"}, "127.0.0.5:49192,127.0.0.6:49192,127.0.0.7:49192"},
		{map[string]string{"KAFKA_CLUSTER_HOSTS": "10.0.0.5,10.0.0.6", "KAFKA_CLUSTER_PORT": "9092"}, "10.0.0.5:9092,10.0.0.6:9092"},
	} {
		got, err := clusterAddrs(func(k string) string { return c.env[k] })
		if err != nil || strings.Join(got, ",") != c.want {
			t.Errorf("env %v: %q, %v; want %q", c.env, got, err, c.want)
		}
	}
}
