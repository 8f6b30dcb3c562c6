package cql_test

import (
	"context"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
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

// TestRecordNothingCostsNoRound: the relay records its dead letters after
// every batch, mostly none. Under a fence, recording none runs no Paxos
// round (the batch's progress save checks the fence), and recording one
// runs one, its fenced batch.
func TestRecordNothingCostsNoRound(t *testing.T) {
	hosts := cqltest.Hosts(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rounds := cql.NewRounds()
	st, err := cql.OpenStore(ctx, cql.Config{Hosts: hosts, Keyspace: cqltest.Keyspace(t, hosts), Timeout: cqltest.Timeout,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))}, cql.Options{Observer: rounds})
	if err != nil {
		t.Fatalf("open the store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	l := cql.NewLedger(st.Session(), gocql.LocalQuorum, gocql.LocalSerial, zaptest.NewLogger(t))
	epoch, err := st.Acquire(ctx, relay.Consumer, "a", time.Minute)
	if err != nil || epoch == 0 {
		t.Fatalf("Acquire = %d, %v", epoch, err)
	}
	fctx := store.WithFence(ctx, store.Fence{Lease: relay.Consumer, Epoch: epoch, Shard: store.Whole})
	if _, err := l.Blocked(fctx); err != nil { // claims the ledger for the epoch
		t.Fatal(err)
	}
	count := func() int {
		lwt, _ := rounds.Take()
		n := 0
		for _, c := range lwt {
			n += c
		}
		return n
	}
	count()
	if err := l.Record(fctx, nil); err != nil {
		t.Fatalf("Record(nil) = %v", err)
	}
	if n := count(); n != 0 {
		t.Errorf("Record(nil) ran %d Paxos rounds; want none", n)
	}
	if err := l.Record(fctx, []relay.DeadLetter{ledgertest.Letter(7, uuid.New(), 1, relay.Failed)}); err != nil {
		t.Fatalf("Record = %v", err)
	}
	if n := count(); n != 1 {
		t.Errorf("Record of one letter ran %d Paxos rounds; want 1", n)
	}
}
