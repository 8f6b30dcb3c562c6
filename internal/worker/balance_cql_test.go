package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/cql"
	"github.com/orderd/orderd/internal/store/cqltest"
)

// TestBalanceCassandra is the balancing scenario of testBalance on a real
// Cassandra keyspace: leases by lightweight transactions, membership rows
// with a TTL. The server rounds both TTLs up to whole seconds plus one, so
// a lapse may come up to two seconds after the ttl.
func TestBalanceCassandra(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: dozens of seconds on Cassandra")
	}
	for _, c := range []struct {
		n   int
		ttl time.Duration
	}{{8, 2 * time.Second}, {64, 3 * time.Second}} {
		t.Run(fmt.Sprint(c.n), func(t *testing.T) {
			hosts := cqltest.Hosts(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			st, err := cql.OpenStore(ctx, cql.Config{Hosts: hosts, Keyspace: cqltest.Keyspace(t, hosts), Timeout: cqltest.Timeout,
				Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))}, cql.Options{NoHints: true, NoHandOff: true, NoSweep: true})
			if err != nil {
				t.Fatalf("open the store: %v", err)
			}
			t.Cleanup(func() { _ = st.Close() })
			testBalance(t, st, c.n, c.ttl, 2*time.Second)
		})
	}
}
