package cql_test

import (
	"context"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/cql"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/ledgertest"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/cqltest"
)

// openLedger opens the event store on a fresh keyspace of the test server,
// which creates the ledger's tables, and returns the ledger on its session.
func openLedger(t *testing.T) relay.Ledger {
	t.Helper()
	l, _ := openLedgerStore(t)
	return l
}

// openLedgerStore is openLedger that also returns the store, whose leases
// fence the ledger's writes.
func openLedgerStore(t *testing.T) (relay.Ledger, store.Leases) {
	t.Helper()
	hosts := cqltest.Hosts(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := cql.OpenStore(ctx, cql.Config{Hosts: hosts, Keyspace: cqltest.Keyspace(t, hosts), Timeout: cqltest.Timeout,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))}, cql.Options{})
	if err != nil {
		t.Fatalf("open the store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return cql.NewLedger(st.Session(), gocql.LocalQuorum, gocql.LocalSerial, zaptest.NewLogger(t)), st
}

func TestLedgerConformance(t *testing.T) {
	ledgertest.Run(t, openLedger)
	ledgertest.RunFenced(t, openLedgerStore)
}
