package cql

import (
	"context"
	"testing"
	"time"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
	"github.com/orderd/orderd/internal/store/cqltest"
)

// TestRebuild runs the rebuild suite on Cassandra, a keyspace per test,
// with a reconciliation pass every second so that the feed's lag, which
// the suite waits on, is measured often.
func TestRebuild(t *testing.T) {
	readmodeltest.RunRebuild(t, func(t *testing.T) readmodeltest.RebuildBackend {
		hosts := cqltest.Hosts(t)
		ks := cqltest.Keyspace(t, hosts)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		st, err := OpenStore(ctx, Config{Hosts: hosts, Keyspace: ks, Timeout: 15 * time.Second,
			Upcaster: aggregate.Upcasters(), Feed: FeedOptions{ReconcileEvery: time.Second}}, Options{})
		if err != nil {
			t.Fatalf("open the event store on keyspace %s: %v", ks, err)
		}
		t.Cleanup(func() { _ = st.Close() })
		e := &env{t: t, hosts: hosts, ks: ks, store: st}
		return readmodeltest.RebuildBackend{Store: st, Catalog: e.catalog(t), TimePrecision: time.Millisecond, Events: 400}
	})
}
