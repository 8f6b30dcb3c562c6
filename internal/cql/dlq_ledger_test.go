package scylla_test

import (
	"context"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/ledgertest"
	relayscylla "github.com/orderd/orderd/internal/relay/scylla"
	"github.com/orderd/orderd/internal/store/cqltest"
	"github.com/orderd/orderd/internal/store/scylla"
)

// openLedger opens the event store on a fresh keyspace of the test server,
// which creates the ledger's tables, and returns the ledger on its session.
func openLedger(t *testing.T) relay.Ledger {
	t.Helper()
	hosts := cqltest.Hosts(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := scylla.Open(ctx, scylla.Config{Hosts: hosts, Keyspace: cqltest.Keyspace(t, hosts), Timeout: cqltest.Timeout},
		scylla.Options{Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))})
	if err != nil {
		t.Fatalf("open the store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return relayscylla.NewLedger(st.Session(), gocql.LocalQuorum, gocql.LocalSerial, zaptest.NewLogger(t))
}

func TestConformance(t *testing.T) {
	ledgertest.Run(t, openLedger)
}
